"""Run by test_sync_batch_norm_mpi.py under `mpirun -np K python3 -m mpi4py`: every process
checks its slice of bnorm.SyncBatchNorm against one-process batch norm on the concatenated
batch (bnorm's own, float32 within 1e-6 and float64 within 1e-12 relative to max(1, |ref|),
and torch's in float64), for even, uneven and empty slices, both layouts, then counts the
collective calls. An AssertionError aborts the whole job (-m mpi4py) with its message."""
import sys

import numpy as np
import torch
from mpi4py import MPI

import bnorm

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


class Counting(bnorm.MPICollective):
    def __init__(self):
        super().__init__(COMM)
        self.allgathers = self.allreduces = 0

    def allgather(self, send, recv):
        self.allgathers += 1
        super().allgather(send, recv)

    def allreduce_sum(self, values):
        self.allreduces += 1
        super().allreduce_sum(values)


def close(got, want, tol, what):
    err = np.max(np.abs(got - want), initial=0.0) / max(1.0, np.max(np.abs(want), initial=0.0))
    assert err <= tol, f"rank {RANK}: {what}: error {err:.3g} > {tol:g}"


def splits():
    yield [4] * SIZE
    yield [2 + (r * 5) % 7 for r in range(SIZE)]
    if SIZE > 1:
        yield [3] + [0] * (SIZE - 2) + [2]
        yield [0] + [2] * (SIZE - 1)


def check(slices, dtype, channels_last, rng):
    n, c, h, w = sum(slices), 6, 5, 3
    tol = 1e-6 if dtype == np.float32 else 1e-12
    x = (7.0 + 2.0 * rng.standard_normal((n, c, h, w))).astype(dtype)
    dy = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (1 + 0.3 * rng.standard_normal(c)).astype(dtype)
    bias = (0.5 * rng.standard_normal(c)).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    whole = bnorm.BatchNorm2d(c, dtype=dtype)
    sync = bnorm.SyncBatchNorm(c, dtype=dtype, comm=Counting())
    for m in (whole, sync):
        m.load_state_dict({"weight": weight, "bias": bias}, strict=False)
    y = whole(x)
    dx = whole.backward(dy)

    begin = sum(slices[:RANK])
    mine = slice(begin, begin + slices[RANK])
    y_mine = sync(x[mine])
    dx_mine = sync.backward(dy[mine])
    assert sync.collective.allgathers == 1 and sync.collective.allreduces == 1
    close(y_mine, y[mine], tol, "y")
    close(dx_mine, dx[mine], tol, "dx")
    for name in ("running_mean", "running_var"):
        close(getattr(sync, name), getattr(whole, name), tol, name)
    close(sync.grad_weight, whole.grad_weight, tol, "grad_weight")
    close(sync.grad_bias, whole.grad_bias, tol, "grad_bias")
    assert int(sync.num_batches_tracked) == 1

    if dtype == np.float64:  # torch's BatchNorm2d on the whole batch, float64
        t = torch.nn.BatchNorm2d(c, dtype=torch.float64)
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(weight))
            t.bias.copy_(torch.from_numpy(bias))
        tx = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
        ty = t(tx)
        ty.backward(torch.from_numpy(dy))
        close(y_mine, ty.detach().numpy()[mine], 1e-10, "y vs torch")
        close(dx_mine, tx.grad.numpy()[mine], 1e-10, "dx vs torch")
        close(sync.running_var, t.running_var.numpy(), 1e-10, "running_var vs torch")
        close(sync.grad_weight, t.weight.grad.numpy(), 1e-10, "grad_weight vs torch")

    # The statistics are the same bits on every process.
    mine_stats = np.concatenate([sync.running_mean, sync.running_var, sync.grad_weight]).astype(np.float64)
    everyone = np.empty(SIZE * mine_stats.size)
    COMM.Allgather(mine_stats, everyone)
    for r in range(SIZE):
        assert np.array_equal(everyone[r * mine_stats.size:(r + 1) * mine_stats.size].view(np.int64),
                              mine_stats.view(np.int64)), f"rank {r} and {RANK} differ"

    # Eval mode talks to nobody.
    sync.eval()
    if slices[RANK] > 0:
        sync(x[mine])
    assert sync.collective.allgathers == 1


def refusal():
    """One process gives the wrong dtype's weight... the C++ checks' refusal path: a
    channel count the module does not have, on the last rank only."""
    sync = bnorm.SyncBatchNorm(4, comm=COMM)
    c = 5 if RANK == SIZE - 1 else 4
    x = np.ones((2, c, 3), np.float32)
    try:
        sync(x)
    except ValueError as e:
        expected = "channels" if RANK == SIZE - 1 else f"process {SIZE - 1} refused"
        assert expected in str(e), str(e)
    else:
        raise AssertionError(f"rank {RANK}: no error")
    assert int(sync.num_batches_tracked) == 0


def main():
    rng = np.random.default_rng(7)
    for slices in splits():
        for dtype in (np.float32, np.float64):
            for channels_last in (False, True):
                check(slices, dtype, channels_last, rng)
    refusal()
    converted = bnorm.SyncBatchNorm.convert_sync_batchnorm([bnorm.BatchNorm1d(3), "x"])
    assert isinstance(converted[0], bnorm.SyncBatchNorm) and converted[1] == "x"
    print(f"rank {RANK} of {SIZE}: OK")
    sys.stdout.flush()


main()
