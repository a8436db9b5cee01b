"""Numerical robustness, determinism, untouched caller data and persistence.

Every fit here uses at most 8 tasks of at most 8 rows on at most 8 distinct inputs,
one input, one output and two clusters: the fit pads these to the same buckets,
so the whole module compiles the EM once.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.core import em as core_em
from mimosa_sklearn.core.em import NumericalFailure

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = {"n_clusters": 2, "max_iter": 3, "random_state": 0}
POOL = np.array([0.0, 1.0, 2.5, 3.0, 4.5, 6.0, 7.0, 9.0])  # 8 distinct inputs


def _fit(X, y, **params) -> MagmaClusterRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(**{**FAST, **params}).fit(X, y)


def _two_groups(seed: int = 0, n_tasks: int = 6, n_rows: int = 6):
    """Two clusters of curves (offsets -2 / +2), ragged and interleaved rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, n_rows + 1, size=n_tasks)
    codes = rng.permutation(np.repeat(np.arange(n_tasks), sizes))
    x = POOL[rng.integers(0, POOL.size, size=codes.size)]
    offset = np.where(np.arange(n_tasks) % 2, 2.0, -2.0)
    y = np.sin(x) + offset[codes] + rng.normal(scale=0.1, size=codes.size)
    X = pd.DataFrame({"ID": np.array([f"task-{c}" for c in codes], dtype=object), "x": x})
    return X, y


@pytest.fixture(scope="module")
def data():
    return _two_groups()


@pytest.fixture(scope="module")
def fitted(data):
    return _fit(*data)


def _assert_valid(est: MagmaClusterRegressor, X: pd.DataFrame) -> None:
    mean, std = est.predict(X, return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
    proba = est.predict_proba(X)
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(np.isfinite(est.elbo_))
    assert np.isfinite(est.weights_).all() and est.weights_.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------- numerics


def _near_duplicates():
    """Inputs 1e-4 apart on a unit scale: the mean-process prior is numerically singular."""
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(6), 6)
    x = 1.0 + rng.integers(0, 5, size=codes.size) * 1e-4
    x[::6] = np.array([0.0, 3.0, 6.0])[rng.integers(0, 3, size=6)]
    y = np.sin(x) + rng.normal(scale=0.1, size=codes.size)
    return pd.DataFrame({"ID": codes, "x": x}), y


@pytest.mark.timeout(600)
def test_cholesky_failure_escalates_jitter_from_zero():
    # Regression: with jitter=0 a failed Cholesky was retried with 10 * 0 = 0 forever.
    X, y = _near_duplicates()
    with pytest.warns(RuntimeWarning, match=r"Numerical failure .* retrying with jitter=1e-10"):
        est = _fit(X, y, jitter=0.0)
    assert est.model_.jitter >= 1e-10
    _assert_valid(est, X)


def test_near_duplicate_inputs_with_default_jitter(recwarn):
    X, y = _near_duplicates()
    est = _fit(X, y)
    _assert_valid(est, X)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def _failing_first(monkeypatch, n_failures: int) -> list[float]:
    """Make the first ``n_failures`` EM iterations return a NaN ELBO; record jitters."""
    real = core_em.em_iteration
    jitters: list[float] = []

    def flaky(params, weights, tau, batch, jitter, *args, **kwargs):
        jitters.append(float(jitter))
        out = real(params, weights, tau, batch, jitter, *args, **kwargs)
        if len(jitters) <= n_failures:
            out = (*out[:4], out[4] * np.nan, *out[5:])
        return out

    monkeypatch.setattr(core_em, "em_iteration", flaky)
    return jitters


def test_jitter_escalates_tenfold_with_a_warning_each_time(monkeypatch, data):
    jitters = _failing_first(monkeypatch, 3)
    with pytest.warns(RuntimeWarning, match="retrying with jitter") as record:
        est = _fit(*data, jitter=1e-6)
    retries = [str(w.message) for w in record if "retrying" in str(w.message)]
    assert [m.split("jitter=")[1] for m in retries] == ["1e-05.", "0.0001.", "0.001."]
    assert jitters[:4] == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3])
    assert est.model_.jitter == pytest.approx(1e-3)
    _assert_valid(est, data[0])


def test_persistent_failure_raises_a_clear_error(monkeypatch, data):
    _failing_first(monkeypatch, 10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NumericalFailure, match="non-finite values") as info:
            _fit(*data, jitter=1e-6)
    assert any("jitter" in note for note in getattr(info.value, "__notes__", []))


def test_huge_output_offset_is_normalised_away(data):
    X, y = data
    plain = _fit(X, y)
    shifted = _fit(X, y + 1e8)
    mean_plain, std_plain = plain.predict(X, return_std=True)
    mean_shift, std_shift = shifted.predict(X, return_std=True)
    # The signal (amplitude ~2) survives an offset 1e8 times larger.
    assert np.sqrt(np.mean((mean_shift - (y + 1e8)) ** 2)) < 0.3
    np.testing.assert_allclose(mean_shift - 1e8, mean_plain, atol=1e-4)
    np.testing.assert_allclose(std_shift, std_plain, rtol=1e-4)
    np.testing.assert_allclose(shifted.predict_proba(X), plain.predict_proba(X), atol=1e-6)


def test_more_clusters_than_groups_gives_valid_memberships():
    # Six copies of one task: k-means sees one point and must re-seed its empty cluster.
    rng = np.random.default_rng(1)
    x = POOL[:6]
    y_one = np.cos(x) + rng.normal(scale=0.1, size=6)
    X = pd.DataFrame({"ID": np.repeat(np.arange(6), 6), "x": np.tile(x, 6)})
    y = np.tile(y_one, 6)
    for init in ("kmeans", "random"):
        est = _fit(X, y, init=init)
        _assert_valid(est, X)
        assert est.memberships_.shape == (6, 2)
        # Identical tasks get identical predictions, whatever cluster they sit in.
        mean = est.predict(X).reshape(6, 6)
        np.testing.assert_allclose(mean, np.broadcast_to(mean[0], mean.shape), atol=1e-6)


def test_single_group_with_two_clusters(data):
    X, y = data
    y_same = np.sin(X["x"].to_numpy())  # every task follows one curve: one natural group
    est = _fit(X, y_same)
    _assert_valid(est, X)


# ---------------------------------------------------------------------- determinism


def test_same_random_state_gives_bit_identical_fits(data):
    X, y = data
    a = _fit(X, y, n_init=2, init="random", random_state=3)
    b = _fit(X, y, n_init=2, init="random", random_state=3)
    np.testing.assert_array_equal(a.elbo_, b.elbo_)
    np.testing.assert_array_equal(a.predict(X, return_std=True), b.predict(X, return_std=True))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    for key, value in a.hyperparameters_.items():
        np.testing.assert_array_equal(value, b.hyperparameters_[key])
    # A RandomState instance drives the same choices as its seed.
    c = _fit(X, y, n_init=2, init="random", random_state=np.random.RandomState(3))
    np.testing.assert_array_equal(c.predict(X), a.predict(X))


# Eight tasks that k-means cannot tell apart: every one has min -1, mean 0 and max 1
# (so identical standardised summaries), with a duplicated input inside task "d" and
# task "e" an exact copy of task "c". Before the content-based canonical order, the
# fit saw tasks in first-seen order and k-means split them by that order.
_LOOKALIKES = {
    "a": ([0.0, 1.0, 2.5], [-1.0, 0.0, 1.0]),
    "b": ([0.0, 1.0, 2.5], [1.0, 0.0, -1.0]),
    "c": ([3.0, 4.5, 6.0, 7.0], [-1.0, 1.0, 1.0, -1.0]),
    "d": ([2.5, 2.5, 9.0], [1.0, -1.0, 0.0]),
    "e": ([3.0, 4.5, 6.0, 7.0], [-1.0, 1.0, 1.0, -1.0]),
    "f": ([0.0, 4.5, 9.0], [0.0, -1.0, 1.0]),
    "g": ([1.0, 3.0, 6.0, 7.0, 9.0], [-1.0, 0.0, 0.0, 0.0, 1.0]),
    "h": ([6.0, 7.0], [1.0, -1.0]),
}


def _task_rows(tasks: dict, order: list, ids: dict, seed: int | None):
    """Rows of ``tasks`` (``{name: (x, y)}``) in ``order``, ids renamed by ``ids`` and,
    with a seed, rows shuffled; also returns the name of each row's task."""
    names = np.concatenate([[t] * len(tasks[t][0]) for t in order])
    x = np.concatenate([tasks[t][0] for t in order])
    y = np.concatenate([tasks[t][1] for t in order])
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(names.size)
        names, x, y = names[perm], x[perm], y[perm]
    X = pd.DataFrame({"ID": pd.Series([ids[t] for t in names], dtype=object), "x": x})
    return X, y, names


def _lookalike_rows(task_order: list[str], ids: dict[str, object], seed: int | None):
    """Rows of ``_LOOKALIKES`` (see :func:`_task_rows`)."""
    return _task_rows(_LOOKALIKES, task_order, ids, seed)


@pytest.mark.parametrize("params", [{}, {"shared_task_hps": False}], ids=["shared", "per_task"])
def test_fit_ignores_task_order_row_order_and_id_labels(params):
    letters = list(_LOOKALIKES)
    X_a, y_a, rows_a = _lookalike_rows(letters, {t: i for i, t in enumerate(letters)}, None)
    # Tasks in another order, rows shuffled, ids of another type whose sort order
    # differs from both the first-seen order and the letters.
    other = ["e", "h", "b", "g", "c", "a", "f", "d"]
    names = {t: f"task-{(5 * i + 3) % 8}" for i, t in enumerate(letters)}
    X_b, y_b, rows_b = _lookalike_rows(other, names, seed=7)
    a = _fit(X_a, y_a, **params)
    b = _fit(X_b, y_b, **params)

    # The same fit, bit for bit: ELBO history, hyperparameters (per-task ones aligned
    # by task), memberships and labels aligned by task id.
    np.testing.assert_array_equal(a.elbo_, b.elbo_)
    to_b = [names[t] for t in letters]
    np.testing.assert_array_equal(a.memberships_.to_numpy(), b.memberships_.loc[to_b].to_numpy())
    np.testing.assert_array_equal(a.labels_, b.labels_[pd.Index(b.task_ids_).get_indexer(to_b)])
    for key, value in a.hyperparameters_.items():
        value_b = b.hyperparameters_[key]
        if value.shape[0] == len(letters) > 1 and (key == "noise" or key.startswith("task_")):
            value_b = value_b[pd.Index(b.task_ids_).get_indexer(to_b)]
        np.testing.assert_array_equal(value, value_b, err_msg=key)
    # Predictions of every row (matched through its task and position), in the
    # caller's row order each time.
    match = np.lexsort((y_b, X_b["x"].to_numpy(), rows_b))
    match_a = np.lexsort((y_a, X_a["x"].to_numpy(), rows_a))
    back = np.empty_like(match)
    back[match_a] = match  # row of b holding the same (task, x, y) as each row of a
    mean_a, std_a = a.predict(X_a, return_std=True)
    mean_b, std_b = b.predict(X_b, return_std=True)
    np.testing.assert_array_equal(mean_a, mean_b[back])
    np.testing.assert_array_equal(std_a, std_b[back])
    np.testing.assert_array_equal(a.predict_proba(X_a), b.predict_proba(X_b)[back])


def test_condition_ignores_the_order_of_new_tasks(fitted):
    rng = np.random.default_rng(3)
    tasks = {
        f"new-{i}": (POOL[rng.choice(POOL.size, size=n, replace=False)], rng.normal(size=n))
        for i, n in enumerate([2, 5, 3, 1])
    }

    def rows(order: list[str], seed: int | None):
        return _task_rows(tasks, order, {t: t for t in tasks}, seed)[:2]

    together = pickle.loads(pickle.dumps(fitted)).condition(*rows(list(tasks), None))
    shuffled = pickle.loads(pickle.dumps(fitted)).condition(*rows(list(tasks)[::-1], seed=1))
    X_pred = pd.DataFrame(
        {"ID": np.repeat(list(tasks), POOL.size).astype(object), "x": np.tile(POOL, len(tasks))}
    )
    np.testing.assert_array_equal(
        together.predict(X_pred, return_std=True), shuffled.predict(X_pred, return_std=True)
    )
    np.testing.assert_array_equal(together.predict_proba(X_pred), shuffled.predict_proba(X_pred))


def test_pickle_round_trip_is_bit_identical(fitted, data):
    X, _ = data
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        restored.predict(X, return_std=True), fitted.predict(X, return_std=True)
    )
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    # Refitting the restored (unfitted copy of the) estimator reproduces the fit.
    refit = _fit(*data, **restored.get_params())
    np.testing.assert_array_equal(refit.predict(X), fitted.predict(X))


# ---------------------------------------------------------------------- caller data


def test_caller_data_never_mutated_and_rows_map_one_to_one(data):
    X0, y0 = data
    rng = np.random.default_rng(5)
    # Shuffled, non-default index; categorical ids; a NaN output; a y Series.
    X = X0.copy()
    X["ID"] = pd.Categorical(X["ID"])
    X.index = pd.Index(rng.permutation(len(X)) * 3 + 100)
    y = pd.Series(y0, index=X.index, name="out")
    y.iloc[[0, 5]] = np.nan
    X_copy, y_copy = X.copy(deep=True), y.copy(deep=True)
    X_new = pd.DataFrame({"ID": ["new"] * 4, "x": POOL[:4]}, index=[9, 8, 7, 6])
    y_new = np.array([0.1, np.nan, 0.3, 0.2])
    X_new_copy, y_new_copy = X_new.copy(deep=True), y_new.copy()

    est = _fit(X, y)
    est.condition(X_new, y_new)
    mean = est.predict(X)
    est.predict(X, return_std=True)
    est.predict(X.iloc[:4], return_cov=True)
    est.predict_proba(X)
    est.score(X, y)
    est.sample_y(X.iloc[:5], n_samples=2, random_state=0)
    frame = est.predict_frame(pd.concat([X, X_new]))

    pd.testing.assert_frame_equal(X, X_copy, check_exact=True)
    pd.testing.assert_series_equal(y, y_copy, check_exact=True)
    pd.testing.assert_frame_equal(X_new, X_new_copy, check_exact=True)
    np.testing.assert_array_equal(y_new, y_new_copy)

    # One prediction per row, in the caller's order, NaN-output rows included.
    assert mean.shape == (len(X),) and np.all(np.isfinite(mean))
    assert list(frame.index) == list(X.index) + list(X_new.index)
    for i in rng.choice(len(X), size=6, replace=False).tolist() + [0, 5]:
        np.testing.assert_allclose(est.predict(X.iloc[[i]]), mean[i], rtol=1e-9, atol=1e-9)
    # Repeated rows are each predicted.
    twice = est.predict(pd.concat([X.iloc[:3], X.iloc[:3]]))
    np.testing.assert_allclose(twice, np.tile(mean[:3], 2), rtol=1e-9, atol=1e-9)


def test_numpy_inputs_never_mutated(data):
    X0, y0 = data
    codes = X0["ID"].str.slice(5).astype(int).to_numpy()
    X = np.column_stack([codes.astype(float), X0["x"].to_numpy()])
    y = y0.copy()
    y[3] = np.nan
    X_copy, y_copy = X.copy(), y.copy()
    est = _fit(X, y, task_col=0)
    pred = est.predict(X)
    est.predict_proba(X)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(y, y_copy)
    assert pred.shape == (len(X),) and np.isfinite(pred[3])


# ---------------------------------------------------------------------- persistence


_FRESH_PROCESS = """
import pickle, sys
import joblib, numpy as np, pandas as pd
d = sys.argv[1]
X = pd.read_pickle(d + "/X.pkl")
expected = np.load(d + "/expected.npz")
for model in (pickle.load(open(d + "/model.pkl", "rb")), joblib.load(d + "/model.joblib")):
    mean, std = model.predict(X, return_std=True)
    np.testing.assert_array_equal(mean, expected["mean"])
    np.testing.assert_array_equal(std, expected["std"])
    np.testing.assert_array_equal(model.predict_proba(X), expected["proba"])
print("ok")
"""


def test_pickle_and_joblib_in_a_fresh_process(fitted, data, tmp_path):
    X, _ = data
    est = pickle.loads(pickle.dumps(fitted))
    X_new = pd.DataFrame({"ID": ["fresh"] * 3, "x": POOL[:3]})
    est.condition(X_new, np.array([0.0, 0.5, 1.0]))
    X_all = pd.concat([X, X_new, X_new.assign(ID="unseen")], ignore_index=True)
    mean, std = est.predict(X_all, return_std=True)
    np.savez(tmp_path / "expected.npz", mean=mean, std=std, proba=est.predict_proba(X_all))
    X_all.to_pickle(tmp_path / "X.pkl")
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(est, f)
    joblib.dump(est, tmp_path / "model.joblib")
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
