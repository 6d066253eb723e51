"""The layering rules of issue 10, read from the sources.

- src/norm/ (the front-ends) sees of the C++ API only <bnorm/error.hpp>: the public C++
  header <bnorm/bnorm.hpp> is built on the front-ends, not below them.
- Every C API function (extern "C" bnorm_*) is defined in src/api/.
- The Python modules (BatchNorm*d in modules.py, the family in norms.py) run the C++
  modules: they call none of the functional bindings
  (which would mean the mode switch, momentum or saved statistics written again here).
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIBRARY_LAYERS = ("reference", "kernels", "norm", "api")


def _sources(folder):
    return sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".h", ".hpp", ".cpp"))


def test_front_ends_do_not_include_the_cpp_api():
    offenders = [str(p.relative_to(ROOT)) for p in _sources("src/norm")
                 if re.search(r'#\s*include\s*[<"]bnorm/bnorm\.hpp[>"]', p.read_text())]
    assert offenders == []
    # ...and what they do include stands on the C header alone.
    error_hpp = (ROOT / "include/bnorm/error.hpp").read_text()
    assert re.findall(r'#\s*include\s*<bnorm/[^>]*>', error_hpp) == ["#include <bnorm/bnorm.h>"]


def _code(path):
    """The source without its // and /* */ comments."""
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)


def test_c_api_functions_are_defined_only_in_src_api():
    c_function = re.compile(r'extern\s+"C"|\bbnorm_\w+\s*\([^;{}]*\)\s*\{')
    offenders = {str(p.relative_to(ROOT)): c_function.findall(_code(p))
                 for layer in LIBRARY_LAYERS if layer != "api"
                 for p in _sources(f"src/{layer}")}
    assert {path: found for path, found in offenders.items() if found} == {}
    api = "".join(_code(p) for p in _sources("src/api"))
    for name in ("bnorm_set_num_threads", "bnorm_get_num_threads", "bnorm_kernel_isa",
                 "bnorm_last_error", "bnorm_batch_norm_forward_training_"):
        assert re.search(r'extern\s+"C"[^;{]*\b' + name, api), name


def test_python_modules_call_the_cpp_module_not_the_functional_bindings():
    source = (ROOT / "python/bnorm/modules.py").read_text()
    functional = re.findall(r"_bnorm\.(\w*(?:forward|backward)\w*)", source)
    assert functional == []
    assert "_bnorm.BatchNormFloat32" in source and "_bnorm.BatchNormFloat64" in source


def test_family_modules_call_the_cpp_modules_not_the_functional_bindings():
    """python/bnorm/norms.py holds bnorm::LayerNorm<T>, RMSNorm<T>, GroupNorm<T> and
    InstanceNorm<T> (python/src/norm_modules.cpp) and calls no functional binding, nor the
    Python functional API (which would be the module logic written again)."""
    source = (ROOT / "python/bnorm/norms.py").read_text()
    assert re.findall(r"_bnorm\.(\w*(?:forward|backward)\w*)", source) == []
    assert re.findall(r"\b(?:layer|rms|group|instance|batch)_norm\w*\(", source) == []
    for kind in ("LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm"):
        assert f'_kind = "{kind}"' in source, kind
    assert 'f"{kind}Float{8 * dtype.itemsize}"' in source
    bound = (ROOT / "python/src/norm_modules.cpp").read_text()
    for kind in ("LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm"):
        for bits in (32, 64):
            assert f'"{kind}Float{bits}"' in bound
