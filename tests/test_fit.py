"""The one fit path (``mimosa_sklearn._fit``).

Proven: :meth:`FitConfig.from_params` takes exactly the FitConfig fields of an
estimator's ``get_params()``, casts numpy scalars to the types of the defaults and
keeps kernels as the very same objects; :func:`fit_magma` keeps the run of highest
final ELBO among ``n_init`` (checked against every run's result, recorded), reports
every kept EM iteration to the callback, and with correlated outputs fits on the
stacked ``(x, output)`` pairs of the observed values while exposing the caller's grid
and two joint outputs. Fits are tiny (4-5 tasks, two EM iterations).
"""

from __future__ import annotations

import dataclasses

import jax
import kernax
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import MagmaClusterRegressor, _fit
from mimosa_sklearn._fit import FitConfig
from mimosa_sklearn.core import runtime

runtime.ensure_safe_cpu_backend()  # before this module's own JAX arrays (the kernel)

GRID = np.linspace(0.0, 5.0, 8)[:, None]


def _tasks(n_tasks: int, n_outputs: int, seed: int):
    """Tasks on ``GRID`` (3 to 6 rows, real rows first), two groups by offset."""
    rng = np.random.default_rng(seed)
    x = np.full((n_tasks, 6, 1), np.nan)
    maps = np.zeros((n_tasks, 6), dtype=np.int64)
    for i in range(n_tasks):
        k = int(rng.integers(3, 7))
        idx = np.sort(rng.choice(GRID.shape[0], k, replace=False))
        x[i, :k], maps[i, :k] = GRID[idx], idx
    offset = np.where(np.arange(n_tasks) % 2, 2.0, -2.0)[:, None, None]
    y = np.sin(x) + offset + 0.1 * rng.normal(size=(n_tasks, 6, n_outputs))
    return x, y, maps


# ---------------------------------------------------------------------- FitConfig


def test_from_params_picks_fields_and_casts_numpy_scalars():
    kernel = kernax.SEKernel(1.0)
    est = MagmaClusterRegressor(
        n_clusters=np.int64(2),
        mean_kernel=kernel,
        shared_task_hps=np.bool_(False),
        correlated_outputs=np.bool_(True),
        max_iter=np.int64(7),
        tol=np.float32(0.25),
        n_init=np.int32(3),
        init=np.str_("random"),
        jitter=np.float32(1e-3),
        random_state=5,
        grid=GRID,
        verbose=1,
    )
    params = est.get_params(deep=False)
    config = FitConfig.from_params(params, seed=np.int64(11))
    assert config.mean_kernel is kernel and config.task_kernel is None
    assert config.seed == 11 and type(config.seed) is int
    defaults = FitConfig()
    shared = [f.name for f in dataclasses.fields(FitConfig) if f.name in params]
    assert len(shared) == 15  # every setting the estimator exposes
    for field in dataclasses.fields(FitConfig):
        got, default = getattr(config, field.name), getattr(defaults, field.name)
        if field.name == "seed":
            continue
        if field.name not in params:
            assert got == default, field.name  # max_steps, task_chunk, ...: defaults
        elif type(default) in (bool, int, float, str):
            assert type(got) is type(default), field.name
            assert got == params[field.name], field.name
        else:
            assert got is params[field.name], field.name  # kernels: the same objects
    assert config.n_clusters == 2 and config.shared_task_hps is False
    assert config.correlated_outputs is True and config.init == "random"
    assert config.tol == 0.25 and config.jitter == float(np.float32(1e-3))


# ---------------------------------------------------------------------- fit_magma


def test_fit_keeps_the_best_of_n_init_runs(monkeypatch):
    real_run_em = _fit.run_em
    runs = []

    def recording(*args, **kwargs):
        runs.append(real_run_em(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(_fit, "run_em", recording)
    seen = []
    x, y, maps = _tasks(5, 1, seed=0)
    config = FitConfig(n_clusters=2, max_iter=2, max_steps=5, n_init=3, init="random", seed=3)
    best = _fit.fit_magma(from_nan(x, y, maps), GRID, config, lambda i, e: seen.append((i, e)))
    elbos = [run.elbo for run in runs]
    assert len(runs) == 3 and len(set(elbos)) > 1  # the runs differ: the choice matters
    chosen = runs[int(np.argmax(elbos))]
    assert best.elbo == max(elbos)
    np.testing.assert_array_equal(best.elbo_history, chosen.elbo_history)
    # run_em ran with 4 clusters, the last 2 padded (core.clusters); the fit keeps 2.
    assert chosen.tau.shape[1] == 4 and not chosen.tau[:, 2:].any()
    np.testing.assert_array_equal(best.tau, chosen.tau[:5, :2])
    # The callback hears every kept iteration of every run.
    assert [i for i, _ in seen] == [i for run in runs for i in range(1, run.n_iter + 1)]
    np.testing.assert_array_equal(
        [e for _, e in seen], np.concatenate([r.elbo_history for r in runs])
    )
    assert best.n_joint_outputs == 1 and best.n_tasks == 5
    np.testing.assert_array_equal(best.grid, GRID)


def test_fit_with_correlated_outputs():
    x, y, maps = _tasks(4, 2, seed=1)
    y[0, 1, 1] = np.nan  # heterotopic: one output missing at one input
    config = FitConfig(n_clusters=2, max_iter=2, max_steps=5, correlated_outputs=True)
    fitted = _fit.fit_magma(from_nan(x, y, maps), GRID, config)
    assert fitted.n_joint_outputs == 2 and fitted.n_tasks == 4
    np.testing.assert_array_equal(fitted.grid, GRID)
    # The model's own grid: the distinct observed (x, output) pairs.
    rows, outs = np.nonzero(~np.isnan(y).reshape(-1, 2) & ~np.isnan(x).reshape(-1, 1))
    pairs = np.unique(np.c_[x.reshape(-1, 1)[rows], outs], axis=0)
    model_grid = np.asarray(fitted.model.grid)[: fitted.n_grid]
    np.testing.assert_array_equal(np.unique(model_grid, axis=0), pairs)
    assert fitted.n_grid == len(pairs)
    x_pred = from_nan(np.repeat(GRID[None, ::3], 2, axis=0))
    mean, var, tau = fitted.predict_training_tasks(np.arange(2), x_pred)
    assert mean.shape == var.shape == (2, 8, 2) and tau.shape == (2, 2)  # 3 rows in 8 slots
    assert np.isfinite(mean).all() and np.all(var[:, :3] > 0) and not var[:, 3:].any()
    _, joint, _ = fitted.predict_training_tasks(np.arange(2), x_pred, full_cov="joint")
    assert joint.shape == (2, 8, 2, 8, 2)
    np.testing.assert_allclose(np.einsum("pmomo->pmo", joint), var, rtol=1e-10)
    coreg = fitted.hyperparameters()["task_kernel.coregionalisation"]
    assert coreg.shape[-2:] == (2, 2)


def test_approximate_grid_with_correlated_outputs_is_refused():
    x, y, maps = _tasks(4, 2, seed=1)
    config = FitConfig(n_clusters=2, correlated_outputs=True)
    with pytest.raises(NotImplementedError, match="approximate grid with correlated"):
        _fit.fit_magma(from_nan(x, y), GRID[::2], config, approximate=True)


def _compiled_em_programs() -> int:
    from mimosa_sklearn.core import compile as core_compile

    return sum(key[0].name.endswith(":em_iteration") for key in core_compile._compiled)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_fold_reuses_the_larger_grid_of_an_earlier_fit(monkeypatch):
    # Cross-validation folds have grids of slightly different sizes (the union of their
    # inputs). A fold whose grid fits in a padded size used before reuses that size, so
    # its EM program is not compiled again, and it fits the same model.
    from mimosa_sklearn import _batching
    from mimosa_sklearn.core import compile as core_compile

    rng = np.random.default_rng(5)
    inputs = 0.25 * np.arange(45)
    # Tasks 0-9 cover inputs 0..38 (39 points, bucket 40); tasks 10-12 add 39..44 (45
    # points, bucket 48, which 39 points may take: 48^3 <= 2 * 39^3). Both take 16
    # task slots.
    index = [np.arange(4 * t, 4 * t + 8) % 39 for t in range(10)]
    index += [np.r_[np.arange(39, 45), rng.choice(39, 2, replace=False)] for _ in range(3)]
    rows = []
    for t, idx in enumerate(index):
        x = np.sort(inputs[idx])
        rows += [(t, xi, np.sin(xi) + 0.3 * t + 0.1 * rng.normal()) for xi in x]
    ids, xs, ys = (np.array(c) for c in zip(*rows, strict=True))
    big = ids < 13
    grids = {n: np.unique(xs[ids < n]).size for n in (13, 10)}
    assert (grids[10], grids[13]) == (39, 45)

    def fit(keep):
        est = MagmaClusterRegressor(n_clusters=1, max_iter=3, random_state=0, task_col=0)
        return est.fit(np.c_[ids[keep], xs[keep]], ys[keep])

    monkeypatch.setattr(_batching, "_grid_sizes", {})
    monkeypatch.setattr(_batching, "GRID_HEADROOM", 0.0)  # the reuse rule alone
    core_compile.forget_compiled()
    fit(big)
    before = _compiled_em_programs()
    small = ids < 10
    reused = fit(small)
    assert _compiled_em_programs() == before  # the 48-point program served the fold
    # The same fold fitted alone, on its own 40-point bucket, gives the same model.
    monkeypatch.setattr(_batching, "_grid_sizes", {})
    alone = fit(small)
    assert _compiled_em_programs() == before + 1
    np.testing.assert_allclose(reused.elbo_, alone.elbo_, rtol=1e-10)
    np.testing.assert_allclose(
        reused.predict(np.c_[ids[small], xs[small]]),
        alone.predict(np.c_[ids[small], xs[small]]),
        rtol=1e-9,
        atol=1e-10,
    )


# ---------------------------------------------------------------------- padded clusters


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"cluster_specific_task_hps": True},
        {"correlated_outputs": True, "shared_cluster_hps": False},
    ],
)
def test_padded_clusters_fit_the_model_of_exact_clusters(monkeypatch, layout):
    # A small fit of 3 clusters runs with 4, the fourth padded (core.clusters): it must
    # be the fit with exactly 3 clusters, cut back to them.
    from mimosa_sklearn import _batching

    # Both on the grid's own bucket (a small fit's spare grid room is tested apart).
    monkeypatch.setattr(_batching, "GRID_HEADROOM", 0.0)
    monkeypatch.setattr(_batching, "_grid_sizes", {})
    o = 2 if layout.get("correlated_outputs") else 1
    x, y, _ = _tasks(8, o, seed=3)
    config = FitConfig(n_clusters=3, max_iter=4, seed=0, **layout)
    padded_to = []
    pad = _fit.pad_clusters
    monkeypatch.setattr(_fit, "pad_clusters", lambda p, t, k: padded_to.append(k) or pad(p, t, k))
    padded = _fit.fit_magma(from_nan(x, y), GRID, config)
    monkeypatch.setattr(_fit, "SMALL_FIT_WORK", -1)
    exact = _fit.fit_magma(from_nan(x, y), GRID, config)
    assert padded_to == [4]
    assert padded.n_clusters == 3 and padded.tau.shape == exact.tau.shape == (8, 3)
    assert padded.params.cluster_mask is None
    np.testing.assert_allclose(padded.elbo_history, exact.elbo_history, rtol=1e-8)
    np.testing.assert_allclose(padded.tau, exact.tau, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(padded.weights, exact.weights, rtol=1e-8, atol=1e-12)
    # Rounding differs (sums over 4 clusters instead of 3) and the optimiser carries it
    # on: 4e-7 relative on a flat direction of the correlated layout.
    for a, b in zip(jax.tree.leaves(padded.params), jax.tree.leaves(exact.params), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(padded.post), jax.tree.leaves(exact.post), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # Predictions run with the padded clusters too (one program for the bucket), unless
    # new tasks' own hyperparameters would carry them (cluster-specific ones).
    cluster_specific = layout.get("cluster_specific_task_hps", False)
    assert padded.padded_clusters == (None if cluster_specific else 4)
    x_pred = from_nan(np.repeat(GRID[None, ::3], 2, axis=0))
    pairs = [
        (
            padded.predict_training_tasks(np.arange(2), x_pred),
            exact.predict_training_tasks(np.arange(2), x_pred),
        ),
    ]
    new = from_nan(x[:3], y[:3])  # the first tasks again, as new tasks
    contexts = padded.condition(new), exact.condition(new)
    pairs.append(((contexts[0].tau,), (contexts[1].tau,)))
    x_new = from_nan(np.repeat(GRID[None, ::3], 3, axis=0))
    pairs.append(
        (padded.predict_new_tasks(contexts[0], x_new), exact.predict_new_tasks(contexts[1], x_new))
    )
    for got, expected in pairs:
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape  # memberships: 3 clusters
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_cluster_counts_of_one_bucket_share_the_em_program(monkeypatch):
    # 2, 3 and 4 clusters run as 4 on small data: one EM program for a search over
    # n_clusters. Past the size limit each count compiles its own.
    from mimosa_sklearn.core import compile as core_compile

    x, y, _ = _tasks(6, 1, seed=4)
    tasks = from_nan(x, y)
    core_compile.forget_compiled()
    for k in (3, 2, 4):
        _fit.fit_magma(tasks, GRID, FitConfig(n_clusters=k, max_iter=2, seed=0))
    assert _compiled_em_programs() == 1
    monkeypatch.setattr(_fit, "SMALL_FIT_WORK", -1)
    for k in (2, 3):
        _fit.fit_magma(tasks, GRID, FitConfig(n_clusters=k, max_iter=2, seed=0))
    assert _compiled_em_programs() == 3
