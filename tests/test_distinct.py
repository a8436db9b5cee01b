"""Tasks grouped by their distinct inputs (``mimosa_sklearn._distinct``).

Proven on random tasks drawn from a few shared inputs and on tasks with inputs of their
own: the groups cover the tasks in order; every row is its group's input at its index,
exactly; a group's distinct inputs stay within the cap (a task with more is a group of
its own); the inputs are padded to a bucketed size with a real input; and ``shared``
says whether the joint ``U x U`` covariance costs fewer flops than the tasks' blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from mimosa_sklearn._distinct import group_by_inputs
from mimosa_sklearn._padded import grid_bucket


def _check(parts, groups, cap):
    assert groups[0].tasks.start == 0 and groups[-1].tasks.stop == parts[0].shape[0]
    for before, after in zip(groups[:-1], groups[1:], strict=True):
        assert before.tasks.stop == after.tasks.start
    for group in groups:
        n_distinct = np.unique(
            np.concatenate([p[group.tasks].reshape(-1, p.shape[-1]) for p in parts]), axis=0
        ).shape[0]
        assert n_distinct <= cap or group.tasks.stop - group.tasks.start == 1
        assert group.inputs.shape[0] == grid_bucket(n_distinct)
        # Padding repeats a real input; every real input is there once.
        assert np.unique(group.inputs, axis=0).shape[0] == n_distinct
        for part, index in zip(parts, group.index, strict=True):
            assert index.dtype == np.int32
            np.testing.assert_array_equal(group.inputs[index], part[group.tasks])
        width = sum(p.shape[1] for p in parts)
        n = group.tasks.stop - group.tasks.start
        assert group.shared == (group.inputs.shape[0] ** 2 <= n * width**2)


@pytest.mark.parametrize("cap", [1, 20, 10_000])
def test_groups_of_tasks_on_shared_inputs(cap):
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(30, 2))
    parts = [pool[rng.integers(0, 30, size=(40, n))] for n in (5, 3)]
    groups = group_by_inputs(parts, cap)
    _check(parts, groups, cap)
    if cap == 10_000:
        assert len(groups) == 1 and groups[0].shared  # 30 inputs, 40 tasks of 8 rows
    if cap == 1:
        assert len(groups) == 40  # every task alone


def test_tasks_with_inputs_of_their_own_are_not_shared():
    rng = np.random.default_rng(1)
    parts = [rng.uniform(size=(25, 6, 1))]
    groups = group_by_inputs(parts, 32)
    _check(parts, groups, 32)
    assert [g.tasks.stop - g.tasks.start for g in groups] == [5] * 5  # 30 inputs each
    assert not any(g.shared for g in groups)
