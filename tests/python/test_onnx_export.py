"""`bnorm export` and `bnorm quantize`: the ONNX files they write compute what
the engine computes, in two independent runtimes, and they fail like every other command.

1. Every model of `bnorm models`, trained briefly, exported with batch norm folded and
   with --no-fold: each file passes onnx's own checker (full_check), has the documented
   interface (input 'input' (N, 1, 28, 28) float32, output 'logits' (N, 10)), and its
   logits on the first 1,000 Fashion-MNIST test images, in onnxruntime (tests/onnx/
   run_onnx.js, the npm package onnxruntime-node) and in OpenCV's dnn module, are within
   1e-4 absolute (2e-5 relative to the largest logit) of `bnorm evaluate --logits`, the
   engine's unfolded network. Folding is checked against the model listing: exactly the
   BatchNorm layers fold, each into the Conv2d/Linear before it, `evaluate --fold-bn`
   says the logits moved by at most 1e-5 relative, a folded file has no
   BatchNormalization node and a --no-fold one has one per BatchNorm layer. A model
   without batch norm says "no batch norm to fold". Two runtimes, because a file one
   runtime tolerates (a wrong attribute default, a layout slip) is often one the other
   reads differently; the engine's own logits are the reference, so a fold that is
   wrong in the same way in the engine and in the file would still be caught by the
   --no-fold export.
2. int8: LeNet-BN trained one epoch on the full training set and quantized (minmax, and
   percentile calibration) runs in onnxruntime on all 10,000 test images within 0.5
   points of the float model, and bnorm's simulated int8 accuracy is within 0.2 points of
   onnxruntime's, so the simulation reports what a deployment would get.
3. Bad input: a damaged checkpoint (truncated, bytes flipped, or well-formed but not
   matching its model), an output in a missing directory, an output that is a directory,
   a write that fails half-way, --calibration-examples 0, a file bnorm did not write, and
   the checkpoint itself as --onnx: each is one "bnorm: error: " line with a non-zero
   status, and leaves no output and no "*.tmp.*" file behind and every input untouched.
"""
import collections
import gzip
import json
import os
import re
import resource
import shutil
import signal
import subprocess

import numpy as np
import pytest

from cli_helpers import (BNORM, FASHION, ROOT, needs_cli, needs_data, one_line_error,
                         read_checkpoint, run, write_checkpoint)

try:
    import onnx
except ImportError:  # pragma: no cover - depends on the machine
    onnx = None
try:
    import cv2
except Exception:  # pragma: no cover - ImportError, or a broken OpenCV install
    cv2 = None

RUN_ONNX = os.path.join(ROOT, "tests", "onnx", "run_onnx.js")
ORT_PACKAGE = os.path.join(ROOT, "tests", "onnx", "node_modules", "onnxruntime-node")
NODE = shutil.which("node")
TEST_IMAGES = os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")
TEST_LABELS = os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")

needs_onnx = pytest.mark.skipif(onnx is None, reason="python3-onnx not installed")
needs_ort = pytest.mark.skipif(
    NODE is None or not os.path.isdir(ORT_PACKAGE),
    reason="node or tests/onnx/node_modules/onnxruntime-node missing (scripts/install-deps)")
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (cv2) cannot be imported")

pytestmark = [needs_cli, needs_data]

MODELS = ["lenet", "lenet-bn", "lenet-ln", "lenet-gn", "lenet-in",
          "mlp", "mlp-bn", "mlp-ln", "vgg", "vgg-bn"]
THREADS = ["--threads", "2"]
BRIEF = ["--epochs", "1", "--train-examples", "512", "--test-examples", "64",
         "--batch-size", "64", *THREADS, "--no-progress"]
COMPARED = 1000           # test images compared logit by logit
ABS_TOL, REL_TOL = 1e-4, 2e-5
FOLD_REL_TOL = 1e-5

REL_LINE = re.compile(r"logits max \|folded - unfolded\| / max \|unfolded\| = (\S+)")
ACC_LINE = re.compile(r"test acc on (\d+) examples: float ([0-9.]+), int8 \(simulated\) ([0-9.]+)")


# --- helpers --------------------------------------------------------------------------

def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == "", result.stderr
    return result.stdout


def listed_models():
    """{model: [layer description by index]} from `bnorm models`."""
    out = ok(run("models"))
    models, current = {}, None
    for line in out.splitlines():
        head = re.match(r"^(\S+) \(\d+ parameters", line)
        layer = re.match(r"^\s+\((\d+)\) (.*)$", line)
        if head:
            current = models.setdefault(head.group(1), [])
        elif layer:
            assert int(layer.group(1)) == len(current), line
            current.append(layer.group(2))
    return models


def expected_fold_lines(layers):
    """The lines `bnorm` prints for the batch norm layers it folds: each into the layer
    before it, which must be a convolution or a linear layer."""
    lines = []
    for i, layer in enumerate(layers):
        if layer.startswith("BatchNorm"):
            assert layers[i - 1].startswith(("Conv2d(", "Linear(")), layers
            lines.append(f"{i}.{layer} into {i - 1}.{layers[i - 1]}")
    return lines


def fold_report(stdout):
    """(header, [folded layer lines]) of what export / evaluate --fold-bn printed."""
    lines = stdout.splitlines()
    for k, line in enumerate(lines):
        if line == "no batch norm to fold":
            return line, []
        m = re.match(r"^folded (\d+) batch norm layers?:$", line)
        if m:
            n = int(m.group(1))
            return line, [entry.strip() for entry in lines[k + 1:k + 1 + n]]
    return None, []


def first_test_images(n):
    with gzip.open(TEST_IMAGES, "rb") as f:
        raw = f.read()
    assert raw[:4] == b"\x00\x00\x08\x03"
    return (np.frombuffer(raw, np.uint8, n * 784, 16).reshape(n, 1, 28, 28)
            .astype(np.float32) / np.float32(255))


def run_ort(model, count=0, labels=False):
    """({examples, classes, accuracy, ...}, logits) of tests/onnx/run_onnx.js."""
    logits_path = f"{model}.ort.f32"
    args = [NODE, RUN_ONNX, "--model", str(model), "--images", TEST_IMAGES, *THREADS,
            "--logits", logits_path]
    if count:
        args += ["--count", str(count)]
    if labels:
        args += ["--labels", TEST_LABELS]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    logits = np.fromfile(logits_path, "<f4").reshape(result["examples"], result["classes"])
    os.unlink(logits_path)
    return result, logits


def run_cv2(model, images):
    net = cv2.dnn.readNetFromONNX(str(model))
    net.setInput(images)
    return np.asarray(net.forward(), np.float32)


def checked(path):
    """The model at `path`, after onnx's checker with shape inference."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model


def op_counts(model):
    return collections.Counter(node.op_type for node in model.graph.node)


def assert_close(name, got, want):
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.all(np.isfinite(got)), name
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    rel = err / float(np.max(np.abs(want)))
    print(f"{name}: max |diff| {err:.3g}, relative {rel:.3g}")
    assert err <= ABS_TOL and rel <= REL_TOL, (name, err, rel)


def leftovers(directory):
    return sorted(n for n in os.listdir(directory) if ".tmp." in n)


# --- 1. every model, folded and not, in onnxruntime and OpenCV ------------------------

def test_the_models_tested_are_the_models_listed():
    assert list(listed_models()) == MODELS


@pytest.fixture(scope="module")
def layers_of():
    return listed_models()


@pytest.fixture(scope="module")
def images():
    return first_test_images(COMPARED)


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory):
    """A briefly trained checkpoint of one model, the engine's logits on the first
    COMPARED test images, `evaluate --fold-bn`'s report, and both exports."""
    model = request.param
    d = tmp_path_factory.mktemp(model)
    ckpt = d / "model.ckpt"
    ok(run("train", "--model", model, *BRIEF, "--checkpoint", str(ckpt)))
    reference = d / "reference.npy"
    ok(run("evaluate", "--checkpoint", str(ckpt), "--test-examples", str(COMPARED), *THREADS,
           "--logits", str(reference)))
    fold_bn = ok(run("evaluate", "--checkpoint", str(ckpt), "--test-examples", str(COMPARED),
                     *THREADS, "--fold-bn"))
    files, stdout = {}, {}
    for fold in (True, False):
        files[fold] = d / ("folded.onnx" if fold else "unfolded.onnx")
        stdout[fold] = ok(run("export", "--checkpoint", str(ckpt), "--onnx", str(files[fold]),
                              *([] if fold else ["--no-fold"])))
    logits = np.load(reference)
    assert logits.dtype == np.float32 and logits.shape == (COMPARED, 10)
    return {"model": model, "ckpt": ckpt, "logits": logits, "fold_bn": fold_bn,
            "files": files, "stdout": stdout}


@needs_onnx
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "no-fold"])
def test_export_is_a_checked_model_with_the_documented_interface(exported, fold, layers_of):
    model = checked(exported["files"][fold])
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    (inp,), (out,) = graph.input, graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [1, 28, 28]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [10]
    # The batch dimension is free: any N, not the N of some example batch.
    assert not inp.type.tensor_type.shape.dim[0].dim_value
    bn_layers = sum(layer.startswith("BatchNorm") for layer in layers_of[exported["model"]])
    assert op_counts(model)["BatchNormalization"] == (0 if fold else bn_layers)


@needs_ort
@needs_cv2
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "no-fold"])
def test_onnxruntime_and_opencv_compute_the_engines_logits(exported, fold, images):
    path = exported["files"][fold]
    want = exported["logits"].astype(np.float64)
    result, ort_logits = run_ort(path, count=COMPARED)
    assert (result["examples"], result["classes"]) == (COMPARED, 10), result
    assert_close(f"{exported['model']} {path.name} onnxruntime", ort_logits, want)
    cv2.setNumThreads(2)
    assert_close(f"{exported['model']} {path.name} OpenCV dnn", run_cv2(path, images), want)


def test_the_fold_report_names_exactly_the_batch_norm_layers(exported, layers_of):
    expected = expected_fold_lines(layers_of[exported["model"]])
    out = exported["fold_bn"]
    header, folded = fold_report(out)
    rel = float(REL_LINE.search(out).group(1))
    print(f"{exported['model']}: evaluate --fold-bn relative logit change {rel:.3g}")
    if expected:
        assert header == f"folded {len(expected)} batch norm layers:", out
        assert folded == expected, out
        assert rel <= FOLD_REL_TOL, out
        assert "speed-up" in out
    else:
        assert header == "no batch norm to fold", out
        assert rel == 0, out
    # export says the same; --no-fold says nothing about folding.
    assert fold_report(exported["stdout"][True]) == (header, folded), exported["stdout"][True]
    assert fold_report(exported["stdout"][False]) == (None, []), exported["stdout"][False]
    for fold in (True, False):
        assert str(exported["files"][fold]) in exported["stdout"][fold]


# --- 2. int8 LeNet-BN in onnxruntime ------------------------------------------------------

@pytest.fixture(scope="module")
def lenet_bn(tmp_path_factory):
    """LeNet-BN after one epoch on all 60,000 training images, and its float export."""
    d = tmp_path_factory.mktemp("int8")
    ckpt = d / "lenet-bn.ckpt"
    ok(run("train", "--model", "lenet-bn", "--epochs", "1", *THREADS, "--no-progress",
           "--checkpoint", str(ckpt)))
    float_onnx = d / "float.onnx"
    ok(run("export", "--checkpoint", str(ckpt), "--onnx", str(float_onnx)))
    return d, ckpt, float_onnx


@pytest.fixture(scope="module")
def float_accuracy(lenet_bn):
    result, _ = run_ort(lenet_bn[2], labels=True)
    assert result["examples"] == 10000
    return result["accuracy"]


@needs_onnx
@needs_ort
@pytest.mark.parametrize("calibration", [[], ["--calibration", "percentile", "--percentile", "99.9"]],
                         ids=["minmax", "percentile"])
def test_int8_lenet_bn_in_onnxruntime_keeps_the_float_accuracy(lenet_bn, float_accuracy,
                                                              calibration):
    d, ckpt, _ = lenet_bn
    path = d / f"int8-{'percentile' if calibration else 'minmax'}.onnx"
    out = ok(run("quantize", "--checkpoint", str(ckpt), "--onnx", str(path), *THREADS,
                 *calibration))
    assert ("(percentile 99.9)" if calibration else "(min/max)") in out, out
    assert "calibrated on 1000 training examples" in out, out
    m = ACC_LINE.search(out)
    assert m, out
    examples, bnorm_float, bnorm_int8 = int(m.group(1)), float(m.group(2)), float(m.group(3))
    assert examples == 10000

    model = checked(path)
    ops = op_counts(model)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, ops
    assert ops["BatchNormalization"] == 0, ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)
    assert os.path.getsize(path) < os.path.getsize(lenet_bn[2])

    result, _ = run_ort(path, labels=True)
    ort_int8 = result["accuracy"]
    print(f"{path.name}: float {float_accuracy:.4f} (bnorm {bnorm_float:.4f}), "
          f"int8 onnxruntime {ort_int8:.4f}, bnorm simulated {bnorm_int8:.4f}")
    assert result["examples"] == 10000
    assert float_accuracy > 0.6  # one epoch of LeNet-BN: a model worth quantizing
    assert abs(bnorm_float - float_accuracy) <= 0.001
    assert abs(ort_int8 - float_accuracy) <= 0.005
    assert abs(bnorm_int8 - ort_int8) <= 0.002


# --- 3. bad input -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    """A LeNet-BN checkpoint of one short epoch, to damage and to export."""
    ckpt = tmp_path_factory.mktemp("small") / "good.ckpt"
    ok(run("train", "--model", "lenet-bn", *BRIEF, "--checkpoint", str(ckpt)))
    return ckpt


@pytest.fixture
def work(tmp_path, small_ckpt):
    """A directory holding a copy of the good checkpoint."""
    ckpt = tmp_path / "good.ckpt"
    shutil.copyfile(small_ckpt, ckpt)
    return tmp_path, ckpt


QUICK_QUANTIZE = ["--calibration-examples", "200", "--test-examples", "500", *THREADS]


def command(cmd, ckpt, out, *extra):
    return [cmd, "--checkpoint", str(ckpt), "--onnx", str(out), *extra,
            *(QUICK_QUANTIZE if cmd == "quantize" else [])]


def refused(r, status, directory, before, *needles):
    line = one_line_error(r, status)
    for needle in needles:
        assert needle in line, line
    assert sorted(os.listdir(directory)) == before, "an output or a temporary file was left"
    assert leftovers(directory) == []
    return line


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "flipped":
        for at in (len(data) // 3, len(data) // 3 + 1, len(data) - 100):
            data[at] ^= 0x5A
    elif how == "empty":
        data = b""
    else:  # "text": not a checkpoint at all
        data = b"hello\n"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("cmd", ["export", "quantize"])
@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "text"])
def test_a_damaged_checkpoint_is_one_line_and_writes_nothing(work, cmd, how):
    d, ckpt = work
    damage(ckpt, how)
    data = ckpt.read_bytes()
    before = sorted(os.listdir(d))
    line = refused(run(*command(cmd, ckpt, d / "out.onnx")), 1, d, before, str(ckpt))
    if how in ("truncated", "flipped"):
        assert "damaged" in line or "truncated" in line, line
    assert ckpt.read_bytes() == data


def edited_checkpoint(work, edit):
    """The good checkpoint with edit(meta, tensors) applied, re-sealed (a valid checksum)
    as bad.ckpt; returns its path and the words edit says the error must contain."""
    d, ckpt = work
    meta, tensors = read_checkpoint(ckpt)
    meta, tensors = dict(meta), {k: v.copy() for k, v in tensors.items()}
    needle = edit(meta, tensors)
    bad = d / "bad.ckpt"
    write_checkpoint(bad, meta, tensors)
    return bad, needle


def _missing_tensor(meta, tensors):
    del tensors["model.9.weight"]
    return "model.9.weight"


def _wrong_shape(meta, tensors):
    tensors["model.9.weight"] = np.zeros((120, 255), np.float32)
    return "model.9.weight"


def _wrong_dtype(meta, tensors):
    tensors["model.9.weight"] = tensors["model.9.weight"].astype(np.float64)
    return "model.9.weight"


def _extra_tensor(meta, tensors):
    tensors["model.99.weight"] = np.zeros(3, np.float32)
    return "model.99.weight"


def _no_model(meta, tensors):
    del meta["model"]
    return "model"


def _unknown_model(meta, tensors):
    meta["model"] = "resnet"
    return "resnet"


@pytest.mark.parametrize("cmd", ["export", "quantize"])
@pytest.mark.parametrize("edit", [
    _missing_tensor, _wrong_shape, _wrong_dtype, _extra_tensor, _no_model, _unknown_model,
], ids=lambda f: f.__name__.strip("_"))
def test_a_well_formed_checkpoint_that_does_not_fit_its_model_is_refused(work, cmd, edit):
    d, _ = work
    bad, needle = edited_checkpoint(work, edit)
    before = sorted(os.listdir(d))
    refused(run(*command(cmd, bad, d / "out.onnx")), 1, d, before, needle, str(bad))


@pytest.mark.parametrize("cmd", ["export", "quantize"])
def test_an_output_in_a_missing_directory_is_refused(work, cmd):
    d, ckpt = work
    before = sorted(os.listdir(d))
    target = d / "no" / "such" / "out.onnx"
    refused(run(*command(cmd, ckpt, target)), 2, d, before, "--onnx", "does not exist")
    assert not (d / "no").exists()


@pytest.mark.parametrize("cmd", ["export", "quantize"])
def test_an_output_that_is_a_directory_is_refused_even_with_force(work, cmd):
    d, ckpt = work
    (d / "out.onnx").mkdir()
    before = sorted(os.listdir(d))
    for extra in ([], ["--force"]):
        refused(run(*command(cmd, ckpt, d / "out.onnx", *extra)), 2, d, before,
                "--onnx", "a directory")
    assert os.listdir(d / "out.onnx") == []


@pytest.mark.parametrize("cmd", ["export", "quantize"])
def test_a_write_that_fails_half_way_leaves_no_file(work, cmd):
    # A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so write() fails with EFBIG)
    # makes the write fail after the model was built and the temporary file was opened:
    # the temporary file must go, and no output appear. (Root ignores permissions, so a
    # read-only directory would not do.)
    d, ckpt = work
    before = sorted(os.listdir(d))

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))

    r = subprocess.run([BNORM, *command(cmd, ckpt, d / "out.onnx")], capture_output=True,
                       text=True, timeout=300, preexec_fn=limit_file_size)
    refused(r, 1, d, before, "out.onnx", "failed")


@pytest.mark.parametrize("count,words", [("0", "at least 1"), ("60001", "exceeds the 60000")])
def test_a_calibration_count_outside_the_training_set_is_a_bad_argument(work, count, words):
    d, ckpt = work
    before = sorted(os.listdir(d))
    r = run("quantize", "--checkpoint", str(ckpt), "--onnx", str(d / "out.onnx"),
            "--calibration-examples", count)
    refused(r, 2, d, before, "--calibration-examples", words)


@pytest.mark.parametrize("args,words", [
    (["--percentile", "99"], "--calibration percentile"),
    (["--calibration", "percentile", "--percentile", "50"], "above 50"),
    (["--calibration", "percentile", "--percentile", "100.5"], "--percentile"),
    (["--calibration", "percentile", "--percentile", "nan"], "--percentile"),
])
def test_bad_percentile_is_a_bad_argument(work, args, words):
    d, ckpt = work
    before = sorted(os.listdir(d))
    r = run("quantize", "--checkpoint", str(ckpt), "--onnx", str(d / "out.onnx"), *args)
    refused(r, 2, d, before, "--percentile", words)


def _nan_running_var(meta, tensors):
    tensors["model.1.running_var"][2] = np.nan
    return "layer 1.BatchNorm2d(6): running_var holds NaN"


def _inf_weight(meta, tensors):
    tensors["model.4.weight"][0, 0, 0, 0] = np.inf
    return "layer 4.Conv2d(6, 16, kernel_size=5): weight holds an infinity"


def _negative_running_var(meta, tensors):
    tensors["model.5.running_var"][3] = -1.0
    return "layer 5.BatchNorm2d(16)"


@pytest.mark.parametrize("cmd,extra", [("export", ()), ("export", ("--no-fold",)),
                                       ("quantize", ())])
@pytest.mark.parametrize("edit", [_nan_running_var, _inf_weight, _negative_running_var],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_model_that_would_compute_nan_is_refused_naming_the_layer(work, cmd, extra, edit):
    # A diverged run's checkpoint is well formed; its ONNX model would compute NaN for
    # every input. export and quantize refuse it naming the layer and tensor of the
    # checkpoint's model, before folding (which would smear it into the conv weights).
    d, _ = work
    bad, needle = edited_checkpoint(work, edit)
    before = sorted(os.listdir(d))
    line = one_line_error(run(*command(cmd, bad, d / "out.onnx", *extra)), 1)
    assert needle in line and str(bad) in line, line
    assert sorted(os.listdir(d)) == before and leftovers(d) == []


@pytest.mark.parametrize("cmd", ["export", "quantize"])
def test_a_file_bnorm_did_not_write_needs_force(work, cmd):
    d, ckpt = work
    notes = d / "notes.onnx"
    notes.write_text("my notes\n")
    before = sorted(os.listdir(d))
    refused(run(*command(cmd, ckpt, notes)), 2, d, before, "--onnx", "--force")
    assert notes.read_text() == "my notes\n"
    ok(run(*command(cmd, ckpt, notes, "--force")))
    assert leftovers(d) == []
    if onnx is not None:
        checked(notes)
    # An ONNX file (here, the one just written) is replaced without --force.
    ok(run(*command(cmd, ckpt, notes)))
    assert sorted(os.listdir(d)) == before


@pytest.mark.parametrize("cmd", ["export", "quantize"])
def test_the_checkpoint_itself_is_refused_as_output_even_with_force(work, cmd):
    d, ckpt = work
    data = ckpt.read_bytes()
    os.link(ckpt, d / "hard.ckpt")
    (d / "sub").mkdir()
    before = sorted(os.listdir(d))
    refused(run(*command(cmd, ckpt, ckpt)), 2, d, before, "--onnx", "same file")
    for name in [ckpt, d / "hard.ckpt", f"{d}/sub/../good.ckpt"]:
        refused(run(*command(cmd, ckpt, name, "--force")), 2, d, before,
                "--onnx", "same file", "--checkpoint")
    assert ckpt.read_bytes() == data


@needs_onnx
def test_a_model_without_batch_norm_exports_and_says_nothing_folded(tmp_path):
    ckpt, out = tmp_path / "lenet.ckpt", tmp_path / "lenet.onnx"
    ok(run("train", "--model", "lenet", *BRIEF, "--checkpoint", str(ckpt)))
    stdout = ok(run("export", "--checkpoint", str(ckpt), "--onnx", str(out)))
    assert fold_report(stdout) == ("no batch norm to fold", []), stdout
    assert not re.search(r"^folded", stdout, re.M), stdout
    assert op_counts(checked(out))["BatchNormalization"] == 0
    assert sorted(os.listdir(tmp_path)) == ["lenet.ckpt", "lenet.onnx"]


def test_evaluate_logits_follows_the_output_rules(work):
    # --logits is an output like any other: a file that is not a NumPy array needs
    # --force, the checkpoint itself is refused, and what arrives is a whole .npy.
    d, ckpt = work
    notes = d / "notes.npy"
    notes.write_text("my notes\n")
    before = sorted(os.listdir(d))
    args = ["evaluate", "--checkpoint", str(ckpt), "--test-examples", "64", *THREADS]
    refused(run(*args, "--logits", str(notes)), 2, d, before, "--logits", "--force")
    assert notes.read_text() == "my notes\n"
    refused(run(*args, "--logits", str(ckpt), "--force"), 2, d, before, "--logits", "same file")
    ok(run(*args, "--logits", str(notes), "--force"))
    assert np.load(notes).shape == (64, 10) and leftovers(d) == []
    ok(run(*args, "--fold-bn", "--logits", str(notes)))  # now a NumPy array: no --force
    assert np.load(notes).dtype == np.float32
