"""Several outputs: correlated (stacked multi-output kernels) or independent, and ARD inputs.

JAX compiles once per data shape (tens of seconds), so the fitted estimators are shared
through module-scoped fixtures and every fit uses the same small data set. The tests
that fit models are marked ``slow``: each distinct model costs close to a minute of
compilation on a small CPU; the building blocks are tested without fitting.
"""

from __future__ import annotations

import pickle
import warnings

import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn._kernels import correlated_kernel, correlated_prior_mean, count_trainable
from mimosa_sklearn.core import runtime
from mimosa_sklearn.core.multioutput import PerOutputMean, StackedOutputKernel
from mimosa_sklearn.datasets import make_magma_data

FAST = {"n_clusters": 2, "max_iter": 10, "random_state": 0}
SPLIT = 5.0  # output "b" of the new tasks is hidden beyond this input


def _se(x: np.ndarray, variance: float, length_scale: float) -> np.ndarray:
    d = x[:, None] - x[None, :]
    return variance * np.exp(-0.5 * d**2 / length_scale**2) + 1e-8 * np.eye(x.size)


def make_correlated(n_tasks: int, seed: int, n_points: int = 12, rho: float = 0.95):
    """Two outputs sharing each task's deviation (correlation ``rho``), two clusters.

    ``a = mu_k + f_i + eps`` and ``b = mu_k / 2 + 1 + rho f_i + sqrt(1 - rho^2) g_i +
    eps``: the task deviation ``f_i`` (variance 2) dominates the cluster means, so
    knowing ``a`` of a task tells a lot about its ``b`` at the same input.
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n_points)
    means = [rng.multivariate_normal(np.full(n_points, m), _se(x, 1.0, 2.5)) for m in (-2, 2)]
    frames = []
    for i in range(n_tasks):
        mu = means[i % 2]
        f, g = rng.multivariate_normal(np.zeros(n_points), _se(x, 2.0, 2.0), size=2)
        a = mu + f + 0.1 * rng.normal(size=n_points)
        b = 0.5 * mu + 1.0 + rho * f + np.sqrt(1 - rho**2) * g + 0.1 * rng.normal(size=n_points)
        frames.append(pd.DataFrame({"ID": f"s{seed}_{i:02d}", "Input": x, "a": a, "b": b}))
    df = pd.concat(frames, ignore_index=True)
    return df[["ID", "Input"]], df[["a", "b"]], np.arange(n_tasks) % 2


def _fit(X, y, **params) -> MagmaClusterRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(**{**FAST, **params}).fit(X, y)


@pytest.fixture(scope="module")
def data():
    """8 training tasks (the last one misses ``b`` beyond ``SPLIT``), 4 new tasks.

    ``X_mix`` mixes the three kinds of rows (a training task, conditioned new tasks, an
    unseen task), six rows per task each time, so that every test reuses the programs
    compiled for the others.
    """
    X, Y, _ = make_correlated(8, seed=0)
    last = ((X["ID"] == X["ID"].iloc[-1]) & (X["Input"] > SPLIT)).to_numpy()
    Y_train = Y.copy()
    Y_train.loc[last, "b"] = np.nan  # heterotopic training task
    X_new, Y_new, _ = make_correlated(4, seed=1)
    hidden = (X_new["Input"] > SPLIT).to_numpy()
    Y_obs = Y_new.copy()
    Y_obs.loc[hidden, "b"] = np.nan  # "b" missing on the forecast range, "a" observed
    unseen = X_new[hidden].iloc[:6].assign(ID="unseen")
    X_mix = pd.concat([X[last], X_new[hidden], unseen], ignore_index=True)
    Y_mix = pd.concat([Y[last], Y_new[hidden], Y_new[hidden].iloc[:6]], ignore_index=True)
    return {
        "X": X,
        "Y": Y,
        "Y_train": Y_train,
        "last": last,
        "X_new": X_new,
        "Y_new": Y_new,
        "Y_obs": Y_obs,
        "hidden": hidden,
        "X_mix": X_mix,
        "Y_mix": Y_mix,
    }


@pytest.fixture(scope="module")
def models(data):
    """Correlated and independent (per-output hyperparameters) fits, new tasks conditioned."""
    out = {}
    for name, params in {
        "correlated": {"correlated_outputs": True},
        "independent": {"correlated_outputs": False, "shared_output_hps": False},
    }.items():
        model = _fit(data["X"], data["Y_train"], **params)
        out[name] = model.condition(data["X_new"], data["Y_obs"])
    return out


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


# ---------------------------------------------------------------------- accuracy


@pytest.mark.slow
def test_correlated_outputs_forecast_missing_output_better(models, data):
    """``b`` hidden on the forecast range: the correlated model reads it off ``a``."""
    hidden, truth = data["hidden"], data["Y_new"]["b"].to_numpy()[data["hidden"]]
    rmse = {
        name: _rmse(model.predict(data["X_new"][hidden])[:, 1], truth)
        for name, model in models.items()
    }
    assert rmse["correlated"] < 0.5 * rmse["independent"], rmse


@pytest.mark.slow
def test_heterotopic_training_task(models, data):
    """A training task missing ``b`` on part of its range is forecast from its ``a``."""
    last, truth = data["last"], data["Y"]["b"].to_numpy()[data["last"]]
    rmse = {
        name: _rmse(model.predict(data["X"][last])[:, 1], truth) for name, model in models.items()
    }
    assert rmse["correlated"] < rmse["independent"], rmse


@pytest.mark.slow
def test_learned_output_correlation(models):
    """The task coregionalisation matrix finds the strong correlation of the outputs."""
    hps = models["correlated"].hyperparameters_
    b = hps["task_kernel.coregionalisation"].reshape(2, 2)
    np.testing.assert_allclose(b, b.T)
    assert np.all(np.linalg.eigvalsh(b) > 0)
    assert b[0, 1] / np.sqrt(b[0, 0] * b[1, 1]) > 0.8
    assert hps["noise"].shape == (1, 1, 1)  # one noise variance shared by the outputs
    assert models["correlated"].model_.n_joint_outputs == 2


# ---------------------------------------------------------------------- shapes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["correlated", "independent"])
def test_prediction_shapes(models, data, name):
    """Shapes for O = 2 outputs, on training, conditioned and unseen tasks at once."""
    model, X = models[name], data["X_mix"]
    n = len(X)
    mean = model.predict(X)
    assert mean.shape == (n, 2)
    mean_s, std = model.predict(X, return_std=True)
    assert std.shape == (n, 2) and np.all(std > 0)
    np.testing.assert_allclose(mean_s, mean)
    mean_c, cov = model.predict(X, return_cov=True)
    assert cov.shape == (n, n, 2)
    np.testing.assert_allclose(mean_c, mean)
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov, axis1=0, axis2=1)).T, std, rtol=1e-6)
    assert np.all(cov[:6, 6:] == 0)  # block-diagonal across tasks
    proba = model.predict_proba(X)
    assert proba.shape == (n, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[-1], model.weights_)  # unseen task: mixture weights
    assert model.sample_y(X, n_samples=3, random_state=0).shape == (n, 2, 3)
    frame = model.predict_frame(X)
    assert {"mean_a", "std_a", "lower_b", "upper_b", "cluster"} <= set(frame.columns)
    np.testing.assert_allclose(frame[["mean_a", "mean_b"]].to_numpy(), mean)
    assert np.isfinite(model.score(X, data["Y_mix"]))


@pytest.mark.slow
def test_mean_processes_table(models, data):
    table = models["correlated"].mean_processes_
    assert len(table) == 2 * 2 * data["X"]["Input"].nunique()  # cluster x output x input
    assert set(table["output"]) == {"a", "b"} and np.all(table["std"] >= 0)


@pytest.mark.slow
def test_samples_keep_output_correlation(models, data):
    """Correlated outputs are drawn jointly, independent ones are not (unseen task)."""
    corr = {}
    for name, model in models.items():
        draws = model.sample_y(data["X_mix"], n_samples=2000, random_state=0)[-1]  # (2, S)
        corr[name] = np.corrcoef(draws)[0, 1]
    assert corr["correlated"] > 0.5 and abs(corr["independent"]) < 0.15, corr


@pytest.mark.slow
def test_pickle_roundtrip(models, data):
    model = models["correlated"]
    again = pickle.loads(pickle.dumps(model))
    X = data["X_mix"]
    np.testing.assert_allclose(again.predict(X), model.predict(X))


# ---------------------------------------------------------------------- building blocks


def test_default_correlated_kernel_is_icm_with_ard():
    """``B[p, q] k(x, x')`` with ARD over the inputs only (never the output column)."""
    with runtime.jax_scope():
        kernel = correlated_kernel(None, np.array([1.0, 2.0]), np.array([1.0, 3.0]), 2)
        assert isinstance(kernel, StackedOutputKernel)
        icm = kernel.kernel
        assert np.asarray(icm.inner.length_scales).shape == (2,)
        b = np.asarray(icm.coregionalisation)
        np.testing.assert_allclose(b, np.diag([1.0, 2.0]))  # starts independent
        # W (2x2) + kappa (2) + 2 ARD length scales; the unit SE scale is fixed.
        assert count_trainable(kernel) == 8
        icm = icm.replace(W=np.array([[1.0, 0.0], [0.8, 0.3]]))
        kernel = StackedOutputKernel(icm, 2)
        rng = np.random.default_rng(1)
        x = np.c_[rng.uniform(0, 5, (6, 2)), np.repeat([0.0, 1.0], 3)]
        got = np.asarray(kernel(jnp.asarray(x), jnp.asarray(x)))
        b = np.asarray(icm.coregionalisation)
        d2 = ((x[:, None, :2] - x[None, :, :2]) / np.array([1.0, 3.0])) ** 2
        ids = x[:, 2].astype(int)
        want = b[ids[:, None], ids[None, :]] * np.exp(-0.5 * d2.sum(-1))
        np.testing.assert_allclose(got, want, rtol=1e-10)
        assert np.all(np.linalg.eigvalsh(got) > -1e-10)


def test_user_kernels_and_means():
    with runtime.jax_scope():
        var = np.ones(2)
        plain = kernax.Matern32Kernel(2.0)
        wrapped = correlated_kernel(plain, var, 1.0, 1)
        assert isinstance(wrapped.kernel, kernax.ICMKernel)
        assert isinstance(wrapped.kernel.inner, kernax.Matern32Kernel)
        icm = kernax.ICMKernel(kernax.SEKernel(1.0), 2, 1)
        assert correlated_kernel(icm, var, 1.0, 1).kernel is icm
        with pytest.raises(ValueError, match="3 outputs but y has 2"):
            correlated_kernel(kernax.ICMKernel(kernax.SEKernel(1.0), 3, 1), var, 1.0, 1)
        mean = correlated_prior_mean(None, 2)
        assert isinstance(mean, PerOutputMean)
        mean = jax.tree.map(lambda a: jnp.asarray([1.0, -2.0]), mean)
        x = jnp.asarray([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
        np.testing.assert_allclose(np.asarray(mean(x)), [1.0, -2.0, 1.0])


# ---------------------------------------------------------------------- slower fits


@pytest.mark.slow
def test_independent_outputs_shared_hyperparameters(models, data):
    """``shared_output_hps=True`` ties the outputs' hyperparameters (one output axis)."""
    shared = _fit(data["X"], data["Y_train"], shared_output_hps=True)
    per_output = models["independent"]
    assert shared.hyperparameters_["noise"].shape[-1] == 1
    assert per_output.hyperparameters_["noise"].shape[-1] == 2
    assert shared.hyperparameters_["mean_kernel.left.variance"].shape[-1] == 1
    assert per_output.hyperparameters_["mean_kernel.left.variance"].shape[-1] == 2
    assert shared.model_.n_parameters() < per_output.model_.n_parameters()
    assert np.isfinite(shared.predict(data["X"])).all()


@pytest.mark.slow
def test_two_inputs_with_ard_recover_clusters():
    """I = 2 inputs, ARD length scales: the clusters are found (ARI >= 0.9)."""
    X, y, clusters = make_magma_data(
        n_tasks=12, n_points=10, n_clusters=3, input_dim=2, grid_size=4, random_state=0
    )
    model = _fit(X, y, n_clusters=3)
    ari = adjusted_rand_score(clusters.loc[model.task_ids_], model.labels_)
    assert ari >= 0.9, ari
    scales = model.hyperparameters_["mean_kernel.right.length_scales"]
    assert scales.shape[-1] == 2
    assert model.predict(X).shape == (len(X),)
