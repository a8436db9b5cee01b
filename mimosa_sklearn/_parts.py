"""Splitting tasks of very different lengths into parts padded to their own length.

Pure numpy: which padded lengths to use (:func:`length_parts`) and the tasks of each
part (:func:`split_by_length`). The core runs the EM on the parts as a batch in parts
(:mod:`.core.parts`).
"""

from __future__ import annotations

import numpy as np

from ._padded import Padded, take

__all__ = ["length_parts", "split_by_length", "MAX_PARTS", "MIN_TASKS"]

# Each part compiles its own per-task code, so a part must pay for itself.
MAX_PARTS = 3
# Below this many tasks, compiling a second part costs more than it saves.
MIN_TASKS = 256
# A part is kept when folding it into the next one would add more than this fraction
# of the total per-task work.
_TOLERANCE = 0.1


def length_parts(
    lengths: np.ndarray,
    candidates: np.ndarray,
    max_parts: int = MAX_PARTS,
    tolerance: float = _TOLERANCE,
) -> list[int]:
    """Padded lengths of the parts, ascending (one entry: no split).

    Parameters
    ----------
    lengths : int array of shape (T,)
        Number of rows of every task.
    candidates : int array of shape (T,)
        The padded length each task would get on its own (bucketed, ``>= lengths``).
    max_parts : int
        Most parts to return.
    tolerance : float
        Parts are merged, cheapest first, while a merge adds less than this fraction of
        the per-task work (a task of padded length ``N`` counts ``N^3``, its
        factorisations) or while there are more than ``max_parts``.
    """
    lengths = np.asarray(lengths)
    sizes = sorted({int(c) for c in np.asarray(candidates)})
    if max_parts <= 1 or len(sizes) == 1:
        return sizes[-1:]

    def work(sz: list[int]) -> float:
        edges = np.searchsorted(np.asarray(sz), lengths, side="left")
        return float(np.sum(np.asarray(sz, dtype=np.float64)[edges] ** 3))

    while len(sizes) > 1:
        current = work(sizes)
        merged = [sizes[:i] + sizes[i + 1 :] for i in range(len(sizes) - 1)]
        costs = [work(m) for m in merged]
        best = int(np.argmin(costs))
        if len(sizes) <= max_parts and costs[best] - current > tolerance * current:
            break
        sizes = merged[best]
    return sizes


def split_by_length(tasks: Padded, sizes: list[int]) -> list[tuple[Padded, np.ndarray]]:
    """The tasks of each part, their row slots cut to the part's length.

    Returns, per part in ``sizes`` order, the part's tasks (:func:`._padded.take`) and
    the index of each of them in ``tasks``. Every real task lands in exactly one part:
    the first whose length holds it.
    """
    part = np.searchsorted(np.asarray(sizes), tasks.n_points, side="left")
    out = []
    for p, n in enumerate(sizes):
        index = np.flatnonzero(part == p)
        out.append((take(tasks, index, n_rows=n), index))
    return out
