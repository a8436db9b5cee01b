"""``grid="auto"`` (the default): the rule of :func:`mimosa_sklearn._auto_grid.choose_grid`
at its boundaries, and the estimator's use of it on irregular continuous inputs.

The estimator tests fit 30 tasks of 10 continuous random inputs (G = 300 distinct
inputs, above the 256 kept exact whatever the data): small enough for the exact grid to
be the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn._auto_grid import (
    EXACT_ALWAYS,
    MAX_INDUCING,
    MIN_INDUCING,
    choose_grid,
    inducing_count,
)
from mimosa_sklearn.datasets import make_magma_data


def _padded(tasks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Tasks of 1-D inputs -> (T, N, 1) inputs in row slots (-99 in empty ones, which
    must not count) and the real-row mask."""
    n = max(len(t) for t in tasks)
    x = np.full((len(tasks), n, 1), -99.0)
    rows = np.zeros((len(tasks), n), dtype=bool)
    for i, t in enumerate(tasks):
        x[i, : len(t), 0] = t
        rows[i, : len(t)] = True
    return x, rows


def _choose(tasks: list[np.ndarray]):
    return choose_grid(*_padded(tasks), np.unique(np.concatenate(tasks)).size)


# ----------------------------------------------------------------------------- the rule


def test_small_grids_stay_exact_whatever_the_tasks():
    # 1-point tasks: no task work at all, yet 256 distinct inputs stay exact...
    singles = [np.array([v]) for v in np.linspace(0, 1, EXACT_ALWAYS)]
    choice = _choose(singles)
    assert (choice.kind, choice.size, choice.n_distinct_inputs) == ("exact", 256, 256)
    # ...and one more goes to inducing inputs.
    choice = _choose(singles + [np.array([2.0])])
    assert choice.kind == "inducing"
    assert choice.n_distinct_inputs == 257 and choice.size < 257
    assert "G^3 = 1.7e+07 > sum N_i^3 = 257" in choice.reason


def test_exact_while_the_grid_costs_no_more_than_the_tasks():
    # 600 distinct inputs: one task holds them all (600^3 of task work), 20 more hold
    # every 20th (spacing 1/3). G^3 = 600^3 <= sum N_i^3: the exact grid is kept.
    inputs = np.arange(600) / 60.0
    tasks = [inputs] + [inputs[j::20] for j in range(20)]
    choice = _choose(tasks)
    assert choice.kind == "exact" and choice.size == 600
    assert "G^3 = 2.16e+08 <= sum N_i^3 = 2.17e+08" in choice.reason
    # One more distinct input, in a task of its own: 601^3 > 600^3 + 20 x 30^3 + 1.
    choice = _choose(tasks + [np.array([10.5])])
    assert choice.kind == "inducing" and choice.n_distinct_inputs == 601
    assert "G^3 = 2.17e+08 > sum N_i^3 = 2.17e+08" in choice.reason
    # Most gaps inside tasks are 1/60: lattice step 1/120 over 10.5, clipped to 512.
    assert choice.size == MAX_INDUCING


def test_inducing_count_follows_the_range_and_the_spacing_inside_tasks():
    # Tasks observed every 0.5 on [0, 10], each at its own offset: the lattice step is
    # 0.25, so 10 / 0.25 + 1 = 41 points.
    tasks = [np.arange(0.0, 10.0, 0.5) + 0.5 * u for u in np.linspace(0.0, 1.0, 40)[:-1]]
    assert inducing_count(*_padded(tasks)) == 41
    # The spacing is read inside tasks, not across them: the same inputs in tasks of
    # two points 0.5 apart give the same count.
    pairs = [t[i : i + 2] for t in tasks for i in range(0, 20, 2)]
    assert inducing_count(*_padded(pairs)) == 41
    # Empty row slots and row order inside a task change nothing.
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(t) for t in tasks] + [np.array([5.0])]
    assert inducing_count(*_padded(shuffled)) == 41


def test_inducing_count_is_clipped():
    # Spacing 1e-3 on a range of 10: 20001 points -> MAX_INDUCING.
    dense = [np.arange(0.0, 0.02, 0.001) + s for s in np.linspace(0.0, 10.0, 50)]
    assert inducing_count(*_padded(dense)) == MAX_INDUCING
    # Two points per task spanning the range: 3 points -> MIN_INDUCING.
    sparse = [np.array([0.0, 10.0]) + 1e-3 * i for i in range(300)]
    assert inducing_count(*_padded(sparse)) == MIN_INDUCING


def test_inducing_count_multiplies_over_input_columns():
    # Column 0 observed every 1.0 on [0, 9], column 1 every 2.0 on [0, 18]: 19 x 19.
    a = np.arange(10.0)
    x = np.stack([np.column_stack([a, 2 * a])] * 20)
    assert inducing_count(x, np.ones(x.shape[:2], dtype=bool)) == 19 * 19


def test_no_spacing_gives_one_point_per_column():
    # Every task holds one input value: no spacing to read; MIN_INDUCING then.
    singles = [np.array([v]) for v in np.linspace(0, 1, 300)]
    assert inducing_count(*_padded(singles)) == MIN_INDUCING


def test_inducing_not_fewer_than_the_grid_keeps_it_exact():
    # 300 tasks observed every 1e-3 over [0, 0.299] at shared inputs plus one single
    # point: G = 301 > 256 and G^3 > sum N_i^3, but the spacing asks for 512 points.
    shared = np.arange(300) * 1e-3
    tasks = [shared[i : i + 2] for i in range(0, 298, 2)] + [np.array([0.2995])]
    choice = _choose(tasks)
    assert choice.kind == "exact" and "no more than the 512 inducing inputs" in choice.reason


# ------------------------------------------------------------------------ the estimator


@pytest.fixture(scope="module")
def irregular():
    """30 training tasks x 10 continuous random inputs (G = 300), 4 new tasks."""
    X, y, _ = make_magma_data(n_tasks=34, n_points=10, n_clusters=2, random_state=3)
    new = X["ID"].isin(X["ID"].unique()[30:]).to_numpy()
    pos = X.groupby("ID").cumcount().to_numpy()
    return {
        "train": (X[~new], y[~new]),
        "obs": (X[new & (pos < 4)], y[new & (pos < 4)]),
        "target": (X[new & (pos >= 4)], y[new & (pos >= 4)]),
    }


@pytest.fixture(scope="module")
def auto_and_exact(irregular):
    X, y = irregular["train"]
    auto = MagmaClusterRegressor(n_clusters=2, random_state=0).fit(X, y)
    exact = MagmaClusterRegressor(n_clusters=2, grid=None, random_state=0).fit(X, y)
    return auto, exact


def test_default_grid_is_auto_and_recorded(auto_and_exact):
    auto, exact = auto_and_exact
    assert MagmaClusterRegressor().grid == "auto"
    assert auto.grid_choice_.kind == "inducing"
    assert auto.grid_choice_.n_distinct_inputs == 300
    assert auto.grid_choice_.size == np.asarray(auto.model_.grid).shape[0] == MIN_INDUCING
    assert exact.grid_choice_.kind == "exact" and exact.grid_choice_.size == 300
    assert exact.grid_choice_.reason == "exact grid of 300 distinct inputs (grid=None)"


def test_auto_forecasts_new_tasks_at_new_irregular_times_as_the_exact_grid(
    irregular, auto_and_exact
):
    X_obs, y_obs = irregular["obs"]
    X_tgt, y_tgt = irregular["target"]
    y_true = y_tgt.to_numpy()
    results = {}
    for name, est in zip(("auto", "exact"), auto_and_exact, strict=True):
        est.condition(X_obs, y_obs)
        mean, std = est.predict(X_tgt, return_std=True)
        assert np.isfinite(mean).all() and (std > 0).all()
        results[name] = (mean, std, float(np.sqrt(np.mean((mean - y_true) ** 2))))
    (m_a, s_a, rmse_a), (m_e, s_e, rmse_e) = results["auto"], results["exact"]
    # The target times are new: none of them is a training input or inducing input.
    assert not np.isin(X_tgt["Input"], irregular["train"][0]["Input"]).any()
    assert rmse_a <= 1.05 * rmse_e
    scale = float(np.std(y_true))
    np.testing.assert_allclose(m_a, m_e, atol=0.1 * scale)
    np.testing.assert_allclose(s_a, s_e, rtol=0.2)


def test_the_choice_ignores_the_row_order(irregular, auto_and_exact):
    X, y = irregular["train"]
    perm = np.random.default_rng(5).permutation(len(X))
    est = MagmaClusterRegressor(n_clusters=2, random_state=0, max_iter=1)
    est.fit(X.iloc[perm], y.iloc[perm])
    assert est.grid_choice_ == auto_and_exact[0].grid_choice_
    np.testing.assert_array_equal(
        np.asarray(est.model_.grid), np.asarray(auto_and_exact[0].model_.grid)
    )


def test_verbose_reports_the_choice(irregular, capsys):
    X, y = irregular["train"]
    MagmaClusterRegressor(n_clusters=2, random_state=0, max_iter=1, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "MagmaClust grid: 32 inducing inputs" in out
    assert "not the exact grid of 300 distinct inputs" in out


def test_explicit_grids_are_reported(irregular):
    X, y = irregular["train"]
    est = MagmaClusterRegressor(n_clusters=2, grid=20, random_state=0, max_iter=1).fit(X, y)
    assert est.grid_choice_.reason == "20 inducing inputs (grid=20)"
    est = MagmaClusterRegressor(n_clusters=2, grid=400, random_state=0, max_iter=1).fit(X, y)
    assert est.grid_choice_.kind == "exact"
    assert est.grid_choice_.reason == "exact grid of 300 distinct inputs (grid=400)"


@pytest.mark.slow
def test_1500_irregular_tasks_fit_with_defaults():
    # The shape that crashed with the exact grid as default: G = 30,000, ~190 GiB.
    X, y, _ = make_magma_data(n_tasks=1500, n_points=20, n_clusters=2, random_state=0)
    est = MagmaClusterRegressor(n_clusters=2, random_state=0).fit(X, y)
    assert est.grid_choice_.kind == "inducing"
    assert est.grid_choice_.n_distinct_inputs == 30000
    assert 32 <= est.grid_choice_.size <= 100
    mean = est.predict(X)
    rmse = float(np.sqrt(np.mean((mean - y.to_numpy()) ** 2)))
    assert rmse < 0.5 * float(np.std(y))


def test_correlated_outputs_keep_the_exact_grid(irregular):
    X, y = irregular["train"]
    y2 = np.column_stack([y, -y])
    est = MagmaClusterRegressor(n_clusters=2, correlated_outputs=True, max_iter=1).fit(X, y2)
    assert est.grid_choice_.kind == "exact" and est.grid_choice_.size == 300
    assert "correlated outputs need it" in est.grid_choice_.reason
