"""Property-based (hypothesis) tests over the data layer and MagmaClusterRegressor.

Data a real user might have: ragged tasks of very unequal sizes, rows in any order,
duplicated inputs inside a task, NaN holes in the outputs, string / integer / float /
categorical task ids, inputs on scales from 1e-6 to 1e6, constant outputs.

The data-layer properties are pure NumPy and run many examples. Every estimator fit
with a new padded shape costs a JAX compilation (the fit pads rows and grid points
to buckets of at least 8 and tasks to powers of two), so the fast estimator fuzz keeps
its examples inside few buckets (at most 8 tasks of at most 8 rows, at most 8 distinct
inputs, one input, one output, two clusters), runs few of them, and derandomises
hypothesis so that CI runs the same examples every time. The full ranges (1..50 tasks of 1..60 rows, 1..3 inputs, 1..3 outputs)
run under ``@pytest.mark.slow``, and so do several outputs with holes (modelled jointly
or independently) on 1-D and 2-D inputs with new tasks conditioned on 1 to 3 points,
and skops round-trips of these fits.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from mimosa_sklearn import MagmaClusterRegressor, UnseenTaskWarning
from mimosa_sklearn._data import build_task_data, encode_task_ids, snap_inputs

# ---------------------------------------------------------------------- data layer


@st.composite
def scaled_ragged(draw):
    """Ragged rows with inputs at scales 1e-6..1e6, offsets included (e.g. timestamps).

    Inputs lie on a lattice ``offset + k * scale`` so that distinct inputs differ by
    far more than float noise (at least 1e-9 relative), as real measurements do.
    """
    n_tasks = draw(st.integers(1, 50))
    sizes = draw(
        st.lists(
            st.one_of(st.integers(1, 3), st.integers(1, 60)), min_size=n_tasks, max_size=n_tasks
        )
    )
    n_in = draw(st.integers(1, 3))
    scales = 10.0 ** np.array(draw(st.lists(st.integers(-6, 6), min_size=n_in, max_size=n_in)))
    offsets = np.array(
        [
            draw(st.sampled_from([o for o in (0.0, 1.0, -1e3, 1.7e9) if s >= 1e-9 * abs(o)]))
            for s in scales
        ]
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = int(sum(sizes))
    codes = rng.permutation(np.repeat(np.arange(n_tasks), sizes))
    # Duplicates are common (small lattices), including inside a task.
    span = draw(st.sampled_from([3, 50, 5000]))
    x = offsets + rng.integers(-span, span + 1, size=(n, n_in)) * scales
    y = rng.normal(size=(n, draw(st.integers(1, 3))))
    y[rng.random(y.shape) < 0.3] = np.nan
    return codes, n_tasks, x, y


@settings(max_examples=100, deadline=None, derandomize=True)
@given(scaled_ragged())
def test_data_round_trip_is_lossless_at_every_scale(data):
    codes, n_tasks, x, y = data
    td = build_task_data(codes, n_tasks, x, y)
    # Lossless: distinct inputs stay distinct and exact, whatever their scale or offset
    # (only float noise within ~1e-12 relative is merged; these inputs have none).
    p = td.tasks
    np.testing.assert_array_equal(td.to_rows(p.x), x)
    np.testing.assert_array_equal(td.to_rows(np.where(p.observed, p.y, np.nan)), y)
    assert td.n_grid == len(np.unique(x, axis=0))
    np.testing.assert_array_equal(td.grid[td.to_rows(p.mappings)], x)
    # Order preserving: inside each task, rows keep the caller's order.
    for t in np.unique(codes)[:5]:
        rows = np.flatnonzero(codes == t)
        np.testing.assert_array_equal(td.row_pos[rows], np.arange(rows.size))
    padded = np.full(p.rows.shape, -1)
    padded[td.task_codes, td.row_pos] = np.arange(codes.size)
    np.testing.assert_array_equal(td.to_rows(padded), np.arange(codes.size))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(scaled_ragged(), st.randoms(use_true_random=False))
def test_data_grid_ignores_row_order(data, random):
    codes, n_tasks, x, _ = data
    perm = np.array(random.sample(range(codes.size), codes.size))
    a = build_task_data(codes, n_tasks, x)
    b = build_task_data(codes[perm], n_tasks, x[perm])
    np.testing.assert_array_equal(a.grid, b.grid)
    np.testing.assert_array_equal(a.n_points, b.n_points)
    np.testing.assert_array_equal(b.to_rows(b.tasks.x), x[perm])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(scaled_ragged(), st.randoms(use_true_random=False))
def test_canonical_layout_ignores_row_order_and_task_codes(data, random):
    codes, n_tasks, x, y = data
    perm = np.array(random.sample(range(codes.size), codes.size))
    relabel = np.array(random.sample(range(n_tasks), n_tasks))
    a = build_task_data(codes, n_tasks, x, y, canonical=True)
    b = build_task_data(relabel[codes[perm]], n_tasks, x[perm], y[perm], canonical=True)
    # The padded layout depends on the content only: bit-identical arrays.
    for field in ("x", "rows", "y", "observed", "mappings"):
        got, want = getattr(a.tasks, field), getattr(b.tasks, field)
        np.testing.assert_array_equal(got, want, err_msg=field)
    np.testing.assert_array_equal(a.grid, b.grid)
    np.testing.assert_array_equal(a.n_points, b.n_points)
    # ... and still maps back to the caller's rows and task codes.
    np.testing.assert_array_equal(b.to_rows(b.tasks.x), x[perm])
    np.testing.assert_array_equal(b.to_rows(np.where(b.tasks.observed, b.tasks.y, np.nan)), y[perm])
    np.testing.assert_array_equal(b.task_codes, b.task_index[relabel[codes[perm]]])
    np.testing.assert_array_equal(b.task_order[b.task_index], np.arange(n_tasks))
    # Task c of `a` and task relabel[c] of `b` hold the same rows (tasks with exactly
    # the same rows may swap places, which changes nothing).
    np.testing.assert_array_equal(a.tasks.y[a.task_index], b.tasks.y[b.task_index[relabel]])
    # Rows inside each task are sorted lexicographically by inputs, then outputs.
    outputs = np.where(a.tasks.observed, a.tasks.y, np.nan)
    content = np.concatenate([a.tasks.x, outputs], axis=2)
    for t in range(min(n_tasks, 5)):
        rows = content[t, : a.n_points[t]]
        np.testing.assert_array_equal(rows[np.lexsort(rows.T[::-1])], rows)


def test_snapping_keeps_timestamps_one_second_apart():
    # Regression: the former tolerance (1e-9 of the largest value, chained) merged all
    # of these POSIX timestamps into one input, silently losing the time axis.
    x = 1.7e9 + np.arange(6.0)
    np.testing.assert_array_equal(snap_inputs(x), x)
    td = build_task_data(np.zeros(6, dtype=np.int64), 1, x, np.arange(6.0))
    assert td.n_grid == 6
    np.testing.assert_array_equal(td.to_rows(td.tasks.x)[:, 0], x)
    # Representation noise is still merged.
    assert snap_inputs(np.array([0.1 + 0.2, 0.3]))[0] == 0.3


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=80),
    st.sampled_from(["str", "int", "float", "categorical", "object"]),
)
def test_encode_ids_first_seen_whatever_their_type(raw, kind):
    labels = {
        "str": [f"t{v}" for v in raw],
        "int": [10 * v - 7 for v in raw],
        "float": [v / 4 for v in raw],
        "object": [f"t{v}" if v % 2 else v for v in raw],
    }.get(kind, [f"c{v}" for v in raw])
    if kind == "categorical":
        ids = np.asarray(
            pd.Series(labels, dtype="category").cat.set_categories(
                [f"c{v}" for v in range(10)][::-1]
            )
        )
    else:
        ids = np.asarray(labels, dtype=object if kind == "object" else None)
    codes, uniques = encode_task_ids(ids)
    assert list(uniques) == list(dict.fromkeys(labels))
    np.testing.assert_array_equal(uniques[codes], ids)
    assert codes[0] == 0 and np.all(np.diff(np.maximum.accumulate(codes)) <= 1)


# ---------------------------------------------------------------------- estimator


@dataclasses.dataclass
class Case:
    """A generated data set: ``X`` (task column ``"ID"`` first), ``y`` and its kind."""

    X: pd.DataFrame
    y: np.ndarray
    y_kind: str
    codes: np.ndarray  # task code of each row (first-seen order)

    @property
    def y_scale(self) -> float:
        return float(max(np.nanmax(np.abs(self.y)), 1e-300))


def _ids(kind: str, labels: np.ndarray, codes: np.ndarray):
    """Ids of each row from integer ``labels`` of the tasks, in the wanted type."""
    if kind == "str":
        return np.array([f"id-{v}" for v in labels], dtype=object)[codes]
    if kind == "int":
        return labels[codes]
    if kind == "float":
        return (labels / 8.0)[codes]
    return pd.Categorical(np.array([f"c{v}" for v in labels], dtype=object)[codes])


@st.composite
def cases(
    draw,
    *,
    max_tasks: int,
    max_size: int,
    max_distinct: int,
    n_inputs: tuple[int, ...] = (1,),
    n_outputs: tuple[int, ...] = (1,),
):
    """Ragged multi-task data a user might have (see the module docstring)."""
    n_tasks = draw(st.integers(1, max_tasks))
    sizes = np.array(
        draw(
            st.lists(
                st.one_of(st.integers(1, 2), st.integers(1, max_size)),
                min_size=n_tasks,
                max_size=n_tasks,
            )
        )
    )
    n_in = draw(st.sampled_from(n_inputs))
    n_out = draw(st.sampled_from(n_outputs))
    n_distinct = draw(st.integers(1, max_distinct))
    exps = draw(st.lists(st.integers(-6, 6), min_size=n_in, max_size=n_in))
    id_kind = draw(st.sampled_from(["str", "int", "float", "categorical"]))
    y_kind = draw(st.sampled_from(["curves", "curves", "constant", "task_constant"]))
    holes = draw(st.sampled_from([0.0, 0.0, 0.3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    n = int(sizes.sum())
    codes = np.repeat(np.arange(n_tasks), sizes)
    # Unsorted rows, tasks interleaved, but first-seen task order = code order.
    codes = rng.permutation(codes)
    _, first = np.unique(codes, return_index=True)
    codes = np.argsort(np.argsort(first))[codes]
    # A small pool of distinct inputs, drawn with replacement: duplicates inside tasks.
    pool = rng.uniform(0.0, 10.0, size=(n_distinct, n_in))
    unit = pool[rng.integers(0, n_distinct, size=n)]
    x = unit * 10.0 ** np.array(exps, dtype=float)
    group = rng.integers(0, 2, size=n_tasks)  # two natural clusters
    if y_kind == "constant":
        y = np.full((n, n_out), rng.choice([0.0, -3.5, 1e4]))
    elif y_kind == "task_constant":
        y = rng.normal(size=(n_tasks, n_out))[codes] * 5
    else:
        phase = np.arange(n_out)
        y = (
            np.sin(unit.sum(axis=1, keepdims=True) + phase)
            + 3.0 * group[codes][:, None]
            + rng.normal(scale=0.2, size=(n, n_out))
        )
    y = np.where(rng.random(y.shape) < holes, np.nan, y)
    labels = rng.permutation(10 * max_tasks)[:n_tasks]
    X = pd.DataFrame({"ID": _ids(id_kind, labels, codes)})
    for j in range(n_in):
        X[f"x{j}"] = x[:, j]
    return Case(X=X, y=y[:, 0] if n_out == 1 else y, y_kind=y_kind, codes=codes)


# Errors the estimator documents for data like these; anything else is a bug.
_DOCUMENTED = (
    r"n_clusters=\d+ is larger than the number of training tasks",
    r"Input y contains NaN only",
    r"have no observed output",
    r"Output .* of y is never observed",
)


def _fit(case: Case, **params) -> MagmaClusterRegressor | None:
    """Fit, returning None on a documented error; fail on any other error or warning."""
    est = MagmaClusterRegressor(**{"n_clusters": 2, "max_iter": 2, "random_state": 0, **params})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est.fit(case.X, case.y)
        except ValueError as exc:
            if any(re.search(p, str(exc)) for p in _DOCUMENTED):
                return None
            raise
    for w in caught:
        allowed = issubclass(w.category, ConvergenceWarning) or (
            issubclass(w.category, RuntimeWarning) and "retrying with jitter" in str(w.message)
        )
        assert allowed, f"unexpected warning {w.category.__name__}: {w.message}"
    return est


def _observed_tasks(case: Case) -> np.ndarray:
    y = case.y.reshape(len(case.y), -1)
    return np.bincount(case.codes, weights=(~np.isnan(y)).any(axis=1)) > 0


def _check_predictions(est: MagmaClusterRegressor, case: Case) -> tuple[np.ndarray, np.ndarray]:
    n = len(case.X)
    mean, std = est.predict(case.X, return_std=True)
    assert mean.shape == std.shape == case.y.shape
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)
    proba = est.predict_proba(case.X)
    assert proba.shape == (n, est.n_clusters)
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    # Rows of one task share its memberships.
    for t in np.unique(case.codes)[:4]:
        rows = proba[case.codes == t]
        np.testing.assert_array_equal(rows, np.broadcast_to(rows[0], rows.shape))
    if case.y_kind == "constant":
        value = np.nanmax(case.y)
        np.testing.assert_allclose(mean, value, rtol=1e-6, atol=1e-9)
    # A task never seen gets the (finite) cluster-mixture prediction.
    unseen = case.X.iloc[:3].copy()
    unseen["ID"] = unseen["ID"].astype(object)
    unseen["ID"] = ["never-seen"] * len(unseen)
    with pytest.warns(UnseenTaskWarning):
        m_new, s_new = est.predict(unseen, return_std=True)
    assert np.all(np.isfinite(m_new)) and np.all(np.isfinite(s_new))
    return mean, proba


def _relabel(case: Case, order: np.ndarray) -> Case:
    """Rows in ``order`` and task ids replaced by labels of another type and sort order."""
    n_tasks = int(case.codes.max()) + 1
    new_labels = np.array([f"task{(7 * c + 3) % 101:03d}" for c in range(n_tasks)], dtype=object)
    X = case.X.iloc[order].reset_index(drop=True)
    X["ID"] = new_labels[case.codes[order]]
    return Case(X=X, y=case.y[order], y_kind=case.y_kind, codes=case.codes[order])


def _check_permutation_invariance(
    case: Case, mean, proba, seed: int, *, keep_task_order: bool, **params
):
    rng = np.random.default_rng(seed)
    if keep_task_order:
        # Group the rows by task (first-seen order kept) and shuffle inside each task.
        order = np.lexsort((rng.random(len(case.codes)), case.codes))
    else:
        order = rng.permutation(len(case.codes))
    other = _relabel(case, order)
    est = _fit(other, **params)
    assert est is not None
    mean2 = est.predict(other.X)
    proba2 = est.predict_proba(other.X)
    # The fit sees tasks, and rows inside each task, in an order that depends only
    # on the data: any shuffle of the rows and tasks, with relabelled ids, gives the
    # same fit bit for bit, clusters included (no relabelling needed).
    np.testing.assert_array_equal(mean2, mean[order])
    np.testing.assert_array_equal(proba2, proba[order])


# Every example is a new data shape, hence a compilation: few in the default tier,
# the slow tier below covers the full ranges.
_FAST = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _slow(max_examples: int):
    """Settings of the slow tier's fuzz: the same examples every run."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@_FAST
@given(cases(max_tasks=8, max_size=8, max_distinct=8))
def test_fit_predict_fuzz(case):
    est = _fit(case)
    if est is None:
        # Only when the data are genuinely unusable.
        assert int(case.codes.max()) + 1 < 2 or not _observed_tasks(case).all()
        return
    mean, proba = _check_predictions(est, case)
    _check_permutation_invariance(case, mean, proba, seed=len(case.X), keep_task_order=True)
    _check_permutation_invariance(case, mean, proba, seed=len(case.X), keep_task_order=False)


@pytest.mark.slow
@_slow(max_examples=25)
@given(
    cases(max_tasks=50, max_size=60, max_distinct=40, n_inputs=(1, 2, 3), n_outputs=(1, 2, 3)),
    st.integers(1, 3),
)
def test_fit_predict_fuzz_full_ranges(case, n_clusters):
    est = _fit(case, n_clusters=n_clusters, max_iter=3)
    if est is None:
        n_tasks = int(case.codes.max()) + 1
        y = case.y.reshape(len(case.y), -1)
        assert (
            n_tasks < n_clusters or not _observed_tasks(case).all() or np.isnan(y).all(axis=0).any()
        )
        return
    mean, proba = _check_predictions(est, case)
    for keep_task_order in (True, False):
        _check_permutation_invariance(
            case,
            mean,
            proba,
            seed=len(case.X),
            keep_task_order=keep_task_order,
            n_clusters=n_clusters,
            max_iter=3,
        )


def _check_conditioning(est: MagmaClusterRegressor, case: Case, n_obs: int) -> None:
    """Forecast a new task from ``n_obs`` of a fitted task's rows (its observed rows
    first): finite, independent of the order of the observed rows, deterministic, and
    the caller's data are left as they were."""
    y2 = case.y.reshape(len(case.y), -1)
    seen = ~np.isnan(y2).all(axis=1)
    rows = np.flatnonzero(case.codes == case.codes[np.flatnonzero(seen)[0]])
    rows = rows[np.argsort(~seen[rows], kind="stable")]
    X_obs = case.X.iloc[rows[:n_obs]].reset_index(drop=True)
    X_obs["ID"] = "a-new-task"
    y_obs = case.y[rows[:n_obs]]
    X_new = case.X.iloc[rows].reset_index(drop=True)
    X_new["ID"] = "a-new-task"
    before = (X_obs.copy(), y_obs.copy(), X_new.copy())
    mean, std = est.forecast(X_obs, y_obs, X_new)
    assert mean.shape == std.shape == (len(rows),) + case.y.shape[1:]
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)
    flipped = est.forecast(X_obs.iloc[::-1], y_obs[::-1], X_new)
    np.testing.assert_array_equal(flipped[0], mean)
    np.testing.assert_array_equal(flipped[1], std)
    again = est.forecast(X_obs, y_obs, X_new)
    np.testing.assert_array_equal(again[0], mean)
    pd.testing.assert_frame_equal(X_obs, before[0])
    np.testing.assert_array_equal(y_obs, before[1])
    pd.testing.assert_frame_equal(X_new, before[2])
    assert est._contexts == {}  # forecast stores nothing


def _check_skops_round_trip(est: MagmaClusterRegressor, case: Case) -> None:
    """Through skops, trusting only mimosa_sklearn types: the same predictions."""
    import skops.io as sio

    blob = sio.dumps(est)
    untrusted = sio.get_untrusted_types(data=blob)
    assert untrusted and all(t.startswith("mimosa_sklearn.") for t in untrusted), untrusted
    loaded = sio.loads(blob, trusted=untrusted)
    for a, b in zip(
        loaded.predict(case.X, return_std=True), est.predict(case.X, return_std=True), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict_proba(case.X), est.predict_proba(case.X))


@pytest.mark.slow
@_slow(max_examples=12)
@given(
    cases(max_tasks=12, max_size=12, max_distinct=12, n_inputs=(1, 2), n_outputs=(2, 3)),
    st.booleans(),
    st.integers(1, 3),
)
def test_several_outputs_2d_inputs_and_conditioning_fuzz(case, correlated, n_obs):
    # Several outputs with holes, modelled jointly or independently, on 1-D or 2-D
    # inputs; new tasks conditioned on 1 to 3 points.
    X0, y0 = case.X.copy(), case.y.copy()
    est = _fit(case, correlated_outputs=correlated, max_iter=3)
    pd.testing.assert_frame_equal(case.X, X0)
    np.testing.assert_array_equal(case.y, y0)
    if est is None:
        y = case.y.reshape(len(case.y), -1)
        assert (
            int(case.codes.max()) + 1 < 2
            or not _observed_tasks(case).all()
            or np.isnan(y).all(axis=0).any()
        )
        return
    assert est.model_.n_joint_outputs == (case.y.shape[1] if correlated else 1)
    mean, proba = _check_predictions(est, case)
    _check_conditioning(est, case, n_obs)
    _check_skops_round_trip(est, case)
    _check_permutation_invariance(
        case,
        mean,
        proba,
        seed=len(case.X),
        keep_task_order=False,
        correlated_outputs=correlated,
        max_iter=3,
    )
    pd.testing.assert_frame_equal(case.X, X0)
    np.testing.assert_array_equal(case.y, y0)
