"""Model selection by variational BIC, its parameter count, and restarts (issue 6.4).

The parameter count is checked against the table of ALGORITHM.md §5 for every sharing
variant: with a 1-D input the mean kernel has |gamma| = 2 trainable values (variance,
length scale), the task kernel plus noise |theta| = 3, the learned constant prior mean
one value per cluster and output, and the mixture K - 1 free proportions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import make_magma_data
from mimosa_sklearn.selection import select_n_clusters

# --------------------------------------------------------------------------- helpers

# Tiny data set shared by the counting and API tests (one compiled shape per variant).
TINY = {"n_tasks": 6, "n_points": 5, "grid_size": 20}

# Recovery data: identical shapes for every K and seed, so that each candidate K
# compiles once for the whole module (grid of 50 points: every one is used).
RECOVERY = {"n_tasks": 30, "n_points": 10, "grid_size": 50, "separation": 8.0}
RECOVERY_FIT = {"max_iter": 15, "tol": 1e-3, "random_state": 0}


def tiny_data(n_outputs: int = 1, input_dim: int = 1):
    X, y, _ = make_magma_data(
        n_clusters=2, n_outputs=n_outputs, input_dim=input_dim, random_state=0, **TINY
    )
    return X, y


def fit_quiet(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def expected_n_parameters(
    *,
    n_clusters: int,
    n_tasks: int,
    n_outputs: int = 1,
    input_dim: int = 1,
    shared_cluster_hps: bool = True,
    shared_task_hps: bool = True,
    cluster_specific_task_hps: bool = False,
    shared_output_hps: bool = True,
) -> int:
    """|Theta_K| from the table of ALGORITHM.md §5 (default variance * SE kernels)."""
    o = 1 if shared_output_hps else n_outputs
    gamma = 1 + input_dim  # variance + one length scale per input (ARD)
    theta = 1 + input_dim + 1  # variance + length scales + noise
    n_gamma = gamma * (1 if shared_cluster_hps else n_clusters) * o
    n_prior = n_clusters * o  # one learned constant per cluster (and output)
    n_theta = (
        theta
        * (1 if shared_task_hps else n_tasks)
        * (n_clusters if cluster_specific_task_hps else 1)
        * o
    )
    return n_gamma + n_prior + n_theta + (n_clusters - 1)


# ------------------------------------------------------------------ parameter count

VARIANTS = {
    "H00": {},
    "Hk0": {"shared_cluster_hps": False},
    "H0i": {"shared_task_hps": False},
    "Hki": {"shared_cluster_hps": False, "shared_task_hps": False},
    "cluster_specific_shared_tasks": {"cluster_specific_task_hps": True},
    "cluster_specific_task_specific": {
        "cluster_specific_task_hps": True,
        "shared_task_hps": False,
    },
    "two_outputs_not_shared": {"n_outputs": 2, "shared_output_hps": False},
    "two_outputs_shared": {"n_outputs": 2},
    "two_inputs_ard": {"input_dim": 2},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_n_parameters_matches_algorithm_table(name):
    spec = dict(VARIANTS[name])
    n_outputs = spec.pop("n_outputs", 1)
    input_dim = spec.pop("input_dim", 1)
    X, y = tiny_data(n_outputs=n_outputs, input_dim=input_dim)
    model = fit_quiet(MagmaClusterRegressor(n_clusters=2, max_iter=1, random_state=0, **spec), X, y)
    expected = expected_n_parameters(
        n_clusters=2,
        n_tasks=TINY["n_tasks"],
        n_outputs=n_outputs,
        input_dim=input_dim,
        **spec,
    )
    fitted = model.model_
    assert fitted.n_parameters() == expected
    penalty = 0.5 * expected * math.log(TINY["n_tasks"])
    assert fitted.vbic() == pytest.approx(fitted.elbo - penalty, rel=1e-12, abs=1e-9)


def test_n_parameters_magma_has_no_mixture_term():
    X, y = tiny_data()
    model = fit_quiet(MagmaClusterRegressor(n_clusters=1, max_iter=1, random_state=0), X, y)
    # |gamma| + one prior constant + |theta|, no K - 1 term (ALGORITHM.md §8.4).
    assert model.model_.n_parameters() == 2 + 1 + 3


# ------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def tiny_selection():
    X, y = tiny_data()
    template = MagmaClusterRegressor(max_iter=3, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, best = select_n_clusters(template, X, y, candidates=[2, 1, 9])
    assert any("Skipping n_clusters=[9]" in str(w.message) for w in caught)
    return template, table, best


def test_selection_table_layout(tiny_selection):
    _, table, _ = tiny_selection
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "elbo",
        "n_parameters",
        "penalty",
        "vbic",
        "converged",
        "fit_seconds",
    ]
    assert table.index.name == "n_clusters"
    assert list(table.index) == [1, 2]  # sorted, the candidate above T skipped
    log_t = math.log(TINY["n_tasks"])
    np.testing.assert_allclose(table["penalty"], table["n_parameters"] / 2 * log_t)
    np.testing.assert_allclose(table["vbic"], table["elbo"] - table["penalty"])
    assert (table["fit_seconds"] > 0).all()
    assert table["converged"].dtype == bool
    for k in table.index:
        assert table.loc[k, "n_parameters"] == expected_n_parameters(
            n_clusters=k, n_tasks=TINY["n_tasks"]
        )


def test_selection_returns_fitted_argmax(tiny_selection):
    template, table, best = tiny_selection
    assert best.n_clusters == table["vbic"].idxmax()
    assert best.model_.vbic() == pytest.approx(table["vbic"].max())
    assert best.memberships_.shape == (TINY["n_tasks"], best.n_clusters)
    # The template is left untouched and unfitted.
    assert template.n_clusters == 3
    assert not hasattr(template, "model_")


def test_selection_rejects_bad_arguments():
    X, y = tiny_data()
    model = MagmaClusterRegressor()
    with pytest.raises(ValueError, match="criterion"):
        select_n_clusters(model, X, y, criterion="aic")
    with pytest.raises(ValueError, match="positive integers"):
        select_n_clusters(model, X, y, candidates=[0, 1])
    with pytest.raises(ValueError, match="at least one"):
        select_n_clusters(model, X, y, candidates=[])
    with pytest.raises(ValueError, match="number of tasks"), pytest.warns(UserWarning):
        select_n_clusters(model, X, y, candidates=[7, 8])
    with pytest.raises(TypeError, match="n_clusters"):
        select_n_clusters(object(), X, y)


# ------------------------------------------------------------ recovery of the true K


def recovery_data(n_clusters: int, seed: int):
    X, y, clusters = make_magma_data(n_clusters=n_clusters, random_state=seed, **RECOVERY)
    return X, y, clusters


def count_recoveries(n_clusters: int, seeds, candidates) -> tuple[int, list[int]]:
    template = MagmaClusterRegressor(**RECOVERY_FIT)
    chosen = []
    for seed in seeds:
        X, y, _ = recovery_data(n_clusters, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _, best = select_n_clusters(template, X, y, candidates=candidates)
        chosen.append(int(best.n_clusters))
    return sum(k == n_clusters for k in chosen), chosen


@pytest.mark.timeout(1800)  # compiles K = 1..4 on first use (minutes on a loaded CPU)
@pytest.mark.parametrize("n_clusters", [2, 3])
def test_vbic_recovers_true_k_fast(n_clusters):
    hits, chosen = count_recoveries(n_clusters, seeds=[0, 1], candidates=range(1, 5))
    assert hits == 2, f"true K={n_clusters}, chosen {chosen}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("n_clusters", [2, 3, 4, 5])
def test_vbic_recovers_true_k(n_clusters):
    # Issue requirement: the true K in at least 4 of 5 seeds, for K = 2 .. 5.
    hits, chosen = count_recoveries(n_clusters, seeds=range(5), candidates=range(1, 7))
    assert hits >= 4, f"true K={n_clusters}, chosen {chosen}"


# ------------------------------------------------------- restarts and initialisation


@pytest.fixture(scope="module")
def three_groups():
    return recovery_data(3, seed=0)


def test_n_init_keeps_the_best_elbo(three_groups):
    X, y, _ = three_groups
    base = MagmaClusterRegressor(n_clusters=3, init="random", **RECOVERY_FIT)
    single = fit_quiet(clone(base), X, y)
    multi = fit_quiet(clone(base).set_params(n_init=3), X, y)
    # The first of the three restarts is the single run (same seed stream), so the
    # best of three can only be as good or better.
    assert multi.model_.elbo >= single.model_.elbo - 1e-8 * abs(single.model_.elbo)


def test_kmeans_initialisation_does_not_collapse_clusters(three_groups):
    X, y, clusters = three_groups
    model = fit_quiet(MagmaClusterRegressor(n_clusters=3, **RECOVERY_FIT), X, y)
    # Every cluster is the confident home of at least one task...
    assert (model.memberships_.max(axis=0) > 0.5).all()
    # ...and the clusters are the true groups.
    truth = clusters.reindex(model.task_ids_).to_numpy()
    assert adjusted_rand_score(truth, model.labels_) >= 0.9


@pytest.mark.parametrize("n_points", [3, 4, 17])
def test_kmeans_reseeding_with_identical_points_keeps_every_cluster(n_points):
    """All tasks alike (e.g. constant outputs at one input): every point is 'farthest',
    and re-seeding must not give the same point to two empty clusters in turn (that
    left a cluster empty: a NaN centre and a 'Mean of empty slice' warning)."""
    import warnings

    from mimosa_sklearn.core.init import kmeans

    feats = np.ones((n_points, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = kmeans(feats, 3, np.random.default_rng(0))
    assert np.bincount(labels, minlength=3).min() >= 1
