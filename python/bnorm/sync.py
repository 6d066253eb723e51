"""SyncBatchNorm over mpi4py: batch norm whose statistics are those of the whole batch
split across processes (include/bnorm/sync_batch_norm.h states the contract).

    # mpirun -np 4 python3 -m mpi4py train.py      (-m mpi4py: an uncaught exception on
    import bnorm                                   #  one process aborts the whole job)
    bn = bnorm.SyncBatchNorm(64)                   # over MPI.COMM_WORLD
    y = bn(x_slice)                                # this process's slice, global statistics
    dx = bn.backward(dy_slice)                     # grad_weight / grad_bias: the global ones

Per training forward one allgather, per backward one allreduce (of O(C) doubles), whatever
the slices: even, uneven, empty. In eval mode there is no communication: the running
statistics, or without them the local batch's, as torch.nn.SyncBatchNorm.

The communicator is anything with `rank`, `size`, `allgather(send, recv)` and
`allreduce_sum(values)` over float64 numpy arrays, both giving the same bits on every
process: MPICollective wraps an mpi4py communicator; other engines plug in the same way.
"""
import numpy as np

from .modules import _BatchNorm


class MPICollective:
    """bnorm's collective over an mpi4py communicator (MPI.COMM_WORLD when None)."""

    def __init__(self, comm=None):
        if comm is None:
            from mpi4py import MPI  # imported only when used: the package needs no MPI
            comm = MPI.COMM_WORLD
        for method in ("Get_rank", "Get_size", "Allgather"):
            if not hasattr(comm, method):
                raise TypeError(f"comm must be an mpi4py communicator (with {method}), got "
                                f"{type(comm).__name__}")
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def allgather(self, send, recv):
        self.comm.Allgather(send, recv)

    def allreduce_sum(self, values):
        # An allgather, then the sum in rank order: the same bits on every process,
        # whatever MPI's reduction algorithm (the messages are a few doubles per channel).
        parts = np.empty(self.size * values.size)
        self.comm.Allgather(values, parts)
        total = parts[:values.size].copy()
        for r in range(1, self.size):
            total += parts[r * values.size:(r + 1) * values.size]
        values[...] = total

    def __repr__(self):
        return f"MPICollective(rank {self.rank} of {self.size})"


def _collective_of(comm):
    """comm itself when it is a collective already (MPICollective or the caller's own),
    else MPICollective over it (an mpi4py communicator, or None for COMM_WORLD)."""
    if all(hasattr(comm, a) for a in ("rank", "size", "allgather", "allreduce_sum")):
        return comm
    return MPICollective(comm)


class SyncBatchNorm(_BatchNorm):
    """torch.nn.SyncBatchNorm's API over numpy: BatchNorm over (N, C, *) input of any rank
    2 to 5 whose training-mode statistics come from every process's slice of the batch.

    comm: an mpi4py communicator (None: MPI.COMM_WORLD), an MPICollective, or any object
    with rank, size, allgather(send, recv) and allreduce_sum(values). The other arguments
    are BatchNorm2d's. Every process must call forward and backward in the same order;
    an argument one process refuses makes every process raise (the others ValueError
    naming it), with nothing written.
    """
    _ranks = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, comm=None,
                 running_var_estimator="unbiased"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         running_var_estimator=running_var_estimator)
        self._native.synchronize(_collective_of(comm))

    @property
    def collective(self):
        """The collective the module talks through."""
        return self._native.collective

    def __getstate__(self):
        state = super().__getstate__()
        state["_collective"] = self.collective
        return state

    def __setstate__(self, state):
        state = dict(state)
        collective = state.pop("_collective")
        super().__setstate__(state)
        self._native.synchronize(collective)

    @classmethod
    def convert_sync_batchnorm(cls, module, comm=None):
        """A SyncBatchNorm with `module`'s settings, mode and a copy of its state, for a
        BatchNorm1d/2d/3d; lists, tuples and dicts are converted item by item; anything
        else is returned as it is (as torch's convert_sync_batchnorm walks a model)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, module.dtype, comm=comm,
                       running_var_estimator=module.running_var_estimator)
            sync.load_state_dict(module.state_dict())
            sync.train(module.training)
            return sync
        if isinstance(module, (list, tuple)):
            return type(module)(cls.convert_sync_batchnorm(m, comm) for m in module)
        if isinstance(module, dict):
            return type(module)((k, cls.convert_sync_batchnorm(v, comm)) for k, v in module.items())
        return module
