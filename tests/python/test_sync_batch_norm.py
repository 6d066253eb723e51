"""bnorm.SyncBatchNorm in one process, through collectives written in Python (any object
with rank, size, allgather and allreduce_sum): one process equals BatchNorm2d to the bit,
a collective's exception reaches the caller, conversion and copies keep the state. The
multi-process checks run under mpirun in test_sync_batch_norm_mpi.py."""
import copy

import numpy as np
import pytest

import bnorm


class Alone:
    """The collective of a single process, counting its calls."""
    rank, size = 0, 1

    def __init__(self):
        self.calls = []

    def allgather(self, send, recv):
        self.calls.append("allgather")
        recv[...] = send

    def allreduce_sum(self, values):
        self.calls.append("allreduce_sum")


class Broken(Alone):
    def allgather(self, send, recv):
        raise RuntimeError("the network is down")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_process_is_batch_norm_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    x = (3 + rng.standard_normal((6, 5, 4, 3))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    plain, sync = bnorm.BatchNorm2d(5, dtype=dtype), bnorm.SyncBatchNorm(5, dtype=dtype, comm=Alone())
    assert np.array_equal(plain(x), sync(x))
    assert np.array_equal(plain.backward(dy), sync.backward(dy))
    assert sync.collective.calls == ["allgather", "allreduce_sum"]
    for name in ("running_mean", "running_var"):
        assert np.array_equal(getattr(plain, name), getattr(sync, name))
    assert np.array_equal(plain.grad_weight, sync.grad_weight)
    sync.eval()
    assert np.array_equal(plain.eval()(x), sync(x))
    assert sync.collective.calls == ["allgather", "allreduce_sum"]  # eval: no communication


def test_a_collectives_exception_reaches_the_caller_and_nothing_changes():
    bn = bnorm.SyncBatchNorm(3, comm=Broken())
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="allgather raised RuntimeError: the network is down"):
        bn(x)
    assert int(bn.num_batches_tracked) == 0
    assert np.array_equal(bn.running_mean, np.zeros(3, np.float32))


def test_comm_must_be_a_communicator():
    with pytest.raises(TypeError, match="mpi4py communicator"):
        bnorm.SyncBatchNorm(3, comm=42)


def test_convert_sync_batchnorm_keeps_settings_state_and_mode():
    bn = bnorm.BatchNorm1d(4, eps=1e-3, momentum=0.2, dtype=np.float64)
    bn(np.random.default_rng(0).standard_normal((8, 4)))
    bn.eval()
    [sync, other] = bnorm.SyncBatchNorm.convert_sync_batchnorm([bn, "unchanged"], comm=Alone())
    assert isinstance(sync, bnorm.SyncBatchNorm) and other == "unchanged"
    assert (sync.eps, sync.momentum, sync.dtype, sync.training) == (1e-3, 0.2, np.float64, False)
    for name, value in bn.state_dict().items():
        assert np.array_equal(sync.state_dict()[name], value)
        assert sync.state_dict()[name] is not value  # a copy


def test_a_copy_keeps_the_collective():
    bn = bnorm.SyncBatchNorm(2, comm=Alone())
    dup = copy.copy(bn)
    assert dup.collective is bn.collective
    dup(np.ones((3, 2), np.float32))
    assert bn.collective.calls == ["allgather"]
