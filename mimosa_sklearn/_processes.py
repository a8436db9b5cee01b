"""Fits across processes: each process's rows, gathered into the one fit of their union.

After ``jax.distributed.initialize(...)``, every process calls ``fit`` on its own tasks.
The host-side set-up (normalisation, grid, k-means initialisation, default kernels)
then runs on the union of the rows, gathered to every process in process order, so it
is exactly the set-up of a one-process fit on that union: the padded layout is
canonical (it depends only on the data, :func:`._data.build_task_data`). The EM splits
the task axis across the processes' devices (:func:`._fit._device_mesh`), so each
process factorises only its share of the per-task matrices.

Collectives are JAX's own (:mod:`jax.experimental.multihost_utils`, gloo on CPU). Every
process must reach each of them: a process that fails validating its own data says so
to the others first (:meth:`ProcessGroup.agree`), and all of them raise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .core import runtime

__all__ = ["ProcessGroup", "process_group"]


def process_group() -> ProcessGroup | None:
    """The processes of this fit, or None when there is only this one.

    Asking creates JAX's backend (made safe first, :func:`.core.runtime.jax_scope`), so
    it is called only once a fit starts, never at import.
    """
    import jax

    with runtime.jax_scope():
        count = jax.process_count()
        index = jax.process_index()
    return ProcessGroup(index=index, count=count) if count > 1 else None


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the ``count`` processes of a fit."""

    index: int
    count: int

    def _allgather(self, a: np.ndarray) -> np.ndarray:
        from jax.experimental import multihost_utils

        with runtime.jax_scope():  # float64 and int64 cross the wire whole
            return np.asarray(multihost_utils.process_allgather(a))

    def gather(self, a: np.ndarray) -> list[np.ndarray]:
        """Every process's ``a``, in process order; leading lengths may differ."""
        a = np.ascontiguousarray(a)
        lengths = self._allgather(np.array([a.shape[0]], dtype=np.int64))[:, 0]
        kind = a.dtype
        wire = a.view(np.uint8) if kind == np.bool_ else a
        padded = np.zeros((int(lengths.max()),) + wire.shape[1:], dtype=wire.dtype)
        padded[: a.shape[0]] = wire
        stacked = self._allgather(padded)
        return [stacked[p, : lengths[p]].astype(kind, copy=False) for p in range(self.count)]

    def agree(self, error: BaseException | None) -> None:
        """Raise on every process when ``error`` happened on any of them.

        The failing process raises its own error; the others a ValueError naming the
        failing processes (their own logs carry the details).
        """
        failed = self._allgather(np.array([error is not None], dtype=np.int64))[:, 0]
        if error is not None:
            raise error
        if failed.any():
            which = ", ".join(str(p) for p in np.flatnonzero(failed))
            raise ValueError(
                f"The fit failed on process(es) {which} (see their error); process "
                f"{self.index} stops with them."
            )

    def broadcast_seed(self, seed: int) -> int:
        """Process 0's ``seed``: every process must draw the same initialisation."""
        return int(self._allgather(np.array([seed], dtype=np.int64))[0, 0])

    def check_disjoint(self, task_ids: np.ndarray) -> None:
        """Raise ValueError on every process when a task id is held by two processes.

        Ids are compared by their 64-bit hashes (:func:`pandas.util.hash_array`), so
        ids of any type cross the wire as integers; the message names this process's
        shared ids and the processes that also hold them.
        """
        mine = pd.util.hash_array(np.asarray(task_ids, dtype=object)).view(np.int64)
        hashes = self.gather(mine)
        clash = np.zeros(self.count, dtype=bool)
        shared = np.zeros(mine.size, dtype=bool)
        for p, theirs in enumerate(hashes):
            if p != self.index:
                hit = np.isin(mine, theirs)
                clash[p] = hit.any()
                shared |= hit
        any_clash = self._allgather(np.array([clash.any()], dtype=np.int64))[:, 0]
        if not any_clash.any():
            return
        if shared.any():
            ids = ", ".join(repr(i) for i in np.asarray(task_ids)[shared][:5].tolist())
            others = ", ".join(str(p) for p in np.flatnonzero(clash))
            raise ValueError(
                f"Task ids must be disjoint across processes: process {self.index} holds "
                f"task(s) {ids}{' ...' if shared.sum() > 5 else ''}, also held by process(es) "
                f"{others}. Give each task's rows to one process."
            )
        which = ", ".join(str(p) for p in np.flatnonzero(any_clash))
        raise ValueError(
            "Task ids must be disjoint across processes: process(es) "
            f"{which} hold tasks that another process also holds (see their error)."
        )

    def check_same_columns(self, n_inputs: int, n_outputs: int) -> None:
        """Raise ValueError on every process unless all have as many input and output
        columns as this one."""
        shapes = self._allgather(np.array([n_inputs, n_outputs], dtype=np.int64))
        if (shapes != shapes[:1]).any():
            listed = "; ".join(
                f"process {p}: {i} input and {o} output column(s)"
                for p, (i, o) in enumerate(shapes)
            )
            raise ValueError(f"Every process must give the same columns: {listed}.")

    def union(
        self, codes: np.ndarray, n_tasks: int, inputs: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, int]:
        """The rows of every process, as one data set.

        Parameters
        ----------
        codes : int array of shape (n,)
            This process's task code of every row, in ``0 .. n_tasks-1``.
        n_tasks : int
            This process's number of tasks.
        inputs : array of shape (n, I)
            Numeric inputs.
        y : array of shape (n, O)
            Outputs (NaN: missing).

        Returns
        -------
        codes, n_tasks, inputs, y
            The union, processes in order; process ``p``'s task ``c`` has code
            ``offset_p + c``.
        offset : int
            This process's ``offset_p``.
        """
        counts = np.concatenate(self.gather(np.array([n_tasks], dtype=np.int64)))
        offsets = np.cumsum(counts) - counts
        all_codes = self.gather(np.asarray(codes, dtype=np.int64))
        union_codes = np.concatenate([c + off for c, off in zip(all_codes, offsets, strict=True)])
        union_inputs = np.concatenate(self.gather(np.asarray(inputs, dtype=np.float64)))
        union_y = np.concatenate(self.gather(np.asarray(y, dtype=np.float64)))
        return union_codes, int(counts.sum()), union_inputs, union_y, int(offsets[self.index])
