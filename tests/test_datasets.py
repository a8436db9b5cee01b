"""Tests for mimosa_sklearn.datasets (bundled loaders and the MagmaClust simulator)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mimosa_sklearn.datasets import (
    load_swimmers,
    load_synth_dev,
    load_synth_dev_reference,
    load_weight,
    make_magma_data,
)
from mimosa_sklearn.datasets._generators import _distinct_indices, _interp_lattice

# --------------------------------------------------------------------------- loaders


@pytest.mark.parametrize(
    ("split", "n_rows", "n_tasks"),
    [("train", 921, 60), ("test_observed", 351, 30), ("test_target", 237, 30)],
)
def test_synth_dev_shapes(split, n_rows, n_tasks):
    X, y = load_synth_dev(split)
    assert list(X.columns) == ["ID", "Input"]
    assert X.shape == (n_rows, 2) and y.shape == (n_rows,)
    assert y.name == "Output"
    assert X["ID"].nunique() == n_tasks
    assert X["Input"].dtype == np.float64 and y.dtype == np.float64
    assert X["Input"].between(0, 10).all()
    X2, y2, clusters = load_synth_dev(split, return_clusters=True)
    pd.testing.assert_frame_equal(X, X2)
    assert clusters.name == "Cluster"
    assert list(clusters.index) == list(pd.unique(X["ID"]))
    assert clusters.notna().all() and set(clusters) <= {0, 1, 2}


def test_synth_dev_split_consistency():
    Xo, _ = load_synth_dev("test_observed")
    Xt, _ = load_synth_dev("test_target")
    assert (Xo["Input"] <= 6).all() and (Xt["Input"] > 6).all()
    assert set(Xt["ID"]) <= set(Xo["ID"])
    _, _, c_train = load_synth_dev("train", return_clusters=True)
    assert c_train.nunique() == 3


def test_synth_dev_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_synth_dev("validation")


def test_synth_dev_reference():
    ref = load_synth_dev_reference("magmaclustr")
    assert ref["K"] == 3 and ref["n_target_points"] == 237
    assert "rmse" in ref
    assert load_synth_dev_reference("mimosa_ml")["K"] == 3
    with pytest.raises(ValueError, match="name"):
        load_synth_dev_reference("other")


def test_weight():
    X, y = load_weight()
    assert list(X.columns) == ["ID", "age_months"]
    assert X.shape == (3629, 2) and y.shape == (3629,)
    assert y.name == "weight_kg"
    assert X["ID"].nunique() == 342
    assert y.between(1.0, 50.0).all()  # kilograms, from birth to 6 years
    assert set(X["age_months"]) <= {0, 3, 6, 9, 12, 18, 24, 36, 48, 60, 72}
    sizes = X.groupby("ID").size()
    assert sizes.min() >= 6 and sizes.max() <= 11
    X2, y2, sex = load_weight(return_sex=True)
    pd.testing.assert_frame_equal(X, X2)
    assert sex.name == "sex" and len(sex) == 342
    assert set(sex) == {"Female", "Male"}
    assert list(sex.index) == list(pd.unique(X["ID"]))


def test_swimmers():
    X, y = load_swimmers()
    assert list(X.columns) == ["ID", "age_years"]
    assert X.shape == (76832, 2) and y.shape == (76832,)
    assert y.name == "time_s"
    assert y.between(40.0, 120.0).all()  # seconds for 100 m freestyle
    assert X["ID"].nunique() == 3456
    assert isinstance(X["ID"].iloc[0], str)
    assert X["age_years"].between(10, 21).all()
    X1, y1 = load_swimmers(gender=1)
    X2, _ = load_swimmers(gender=2)
    assert len(X1) + len(X2) == len(X)
    assert X1["ID"].nunique() + X2["ID"].nunique() == 3456
    assert X1.index.equals(pd.RangeIndex(len(X1)))
    assert y1.mean() < y.mean()  # gender 1 has the faster mean time
    with pytest.raises(ValueError, match="gender"):
        load_swimmers(gender=3)


# --------------------------------------------------------------------------- make_magma_data


def test_make_magma_data_default_shapes():
    X, y, clusters = make_magma_data(random_state=0)
    assert list(X.columns) == ["ID", "Input"]
    assert X.shape == (50 * 20, 2) and y.shape == (1000,) and y.name == "Output"
    assert clusters.name == "Cluster" and clusters.index.name == "ID"
    assert list(clusters.index) == list(pd.unique(X["ID"]))
    assert sorted(clusters.value_counts()) == [16, 17, 17]
    assert X["Input"].between(0, 10).all()
    assert np.isfinite(y).all()
    # Sorted inside each task.
    assert X.groupby("ID")["Input"].apply(lambda s: s.is_monotonic_increasing).all()


def test_make_magma_data_deterministic():
    a = make_magma_data(n_tasks=20, n_points=(3, 12), random_state=42)
    b = make_magma_data(n_tasks=20, n_points=(3, 12), random_state=42)
    c = make_magma_data(n_tasks=20, n_points=(3, 12), random_state=43)
    for left, right in zip(a, b, strict=True):
        assert left.equals(right)
    assert not a[1].equals(c[1])
    gen = np.random.default_rng(42)
    d = make_magma_data(n_tasks=20, n_points=(3, 12), random_state=gen)
    assert d[1].equals(a[1])


def test_make_magma_data_multi_input_output():
    X, y, clusters = make_magma_data(
        n_tasks=12, n_points=7, n_clusters=4, input_dim=3, n_outputs=2, random_state=1
    )
    assert list(X.columns) == ["ID", "x0", "x1", "x2"]
    assert isinstance(y, pd.DataFrame) and list(y.columns) == ["y0", "y1"]
    assert X.shape == (84, 4) and y.shape == (84, 2)
    assert set(clusters) == {0, 1, 2, 3}
    # Lexicographically sorted inside each task.
    for _, group in X.groupby("ID"):
        cols = group[["x0", "x1", "x2"]].to_numpy()
        np.testing.assert_array_equal(np.lexsort(cols.T[::-1]), np.arange(len(cols)))


def test_make_magma_data_variable_sizes_on_grid():
    X, y, clusters = make_magma_data(n_tasks=40, n_points=(2, 25), grid_size=201, random_state=3)
    sizes = X.groupby("ID").size()
    assert sizes.min() >= 2 and sizes.max() <= 25 and sizes.nunique() > 5
    assert len(sizes) == 40 and len(clusters) == 40
    steps = X["Input"].to_numpy() / 0.05
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    # Distinct inputs inside each task.
    assert not X.duplicated(["ID", "Input"]).any()


def test_make_magma_data_shared_inputs_and_offsets():
    X, y, clusters = make_magma_data(
        n_tasks=6,
        n_points=5,
        n_clusters=2,
        irregular=False,
        grid_size=5,
        cluster_offsets=[-100.0, 100.0],
        noise=0.0,
        random_state=0,
    )
    inputs = X["Input"].to_numpy().reshape(6, 5)
    np.testing.assert_array_equal(inputs, np.tile(np.linspace(0, 10, 5), (6, 1)))
    task_means = y.groupby(X["ID"]).mean()
    np.testing.assert_array_equal(task_means.reindex(clusters.index) > 0, clusters == 1)


def test_make_magma_data_large_continuous_uses_lattice():
    X, y, clusters = make_magma_data(n_tasks=300, n_points=10, noise=0.0, random_state=0)
    assert X.shape == (3000, 2) and np.isfinite(y).all()
    X2, y2, _ = make_magma_data(n_tasks=200, n_points=15, input_dim=2, n_outputs=2, random_state=0)
    assert np.isfinite(y2.to_numpy()).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_tasks": 0},
        {"n_points": (5, 2)},
        {"n_points": (2, 5), "irregular": False},
        {"n_points": 30, "grid_size": 10},
        {"input_range": (1.0, 1.0)},
        {"mean_lengthscale": -1.0},
        {"noise": -0.1},
        {"cluster_offsets": [0.0, 1.0]},
        {"grid_size": 1},
    ],
)
def test_make_magma_data_invalid(kwargs):
    with pytest.raises(ValueError):
        make_magma_data(**kwargs)


def test_interp_lattice_exact_for_linear_functions():
    axis = np.linspace(0.0, 10.0, 7)
    mesh = np.meshgrid(axis, axis, indexing="ij")
    lattice = np.stack([m.reshape(-1) for m in mesh], axis=-1)
    values = np.stack([lattice @ [1.0, -2.0] + 3.0, lattice[:, 0]], axis=-1)
    x = np.random.default_rng(0).uniform(0, 10, size=(50, 2))
    out = _interp_lattice(axis, values, x)
    np.testing.assert_allclose(out[:, 0], x @ [1.0, -2.0] + 3.0)
    np.testing.assert_allclose(out[:, 1], x[:, 0])


@pytest.mark.parametrize(("n_candidates", "n_take"), [(10, 10), (50, 7), (100_000, 20)])
def test_distinct_indices(n_candidates, n_take):
    idx = _distinct_indices(np.random.default_rng(0), n_candidates, 30, n_take)
    assert idx.shape == (30, n_take)
    assert ((idx >= 0) & (idx < n_candidates)).all()
    assert all(len(set(row)) == n_take for row in idx.tolist())
