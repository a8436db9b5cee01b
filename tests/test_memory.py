"""Memory estimate of a fit (:mod:`mimosa_sklearn._memory`), checked before it starts."""

from __future__ import annotations

import numpy as np
import pytest

from mimosa_sklearn import MagmaClusterRegressor, _memory
from mimosa_sklearn._memory import (
    BASE_BYTES,
    GRID_MATRICES,
    LIMIT_ENV,
    PROJECTION_COPIES,
    TASK_GRID_MATRICES,
    FitMemoryError,
    available_bytes,
    check_fit_memory,
    estimate_fit_bytes,
)
from mimosa_sklearn.datasets import make_magma_data

GIB = 2**30


def test_estimate_is_the_documented_formula():
    exact = estimate_fit_bytes(
        n_clusters=3, n_outputs=2, grid_size=1000, n_tasks=50, n_rows=500, approximate=False
    )
    assert exact == 8 * GRID_MATRICES * 3 * 2 * 1000**2 + BASE_BYTES
    approx = estimate_fit_bytes(
        n_clusters=3, n_outputs=2, grid_size=100, n_tasks=50, n_rows=500, approximate=True
    )
    grid_words = GRID_MATRICES * 3 * 2 * 100**2
    task_words = TASK_GRID_MATRICES * 50 * 2 * 100**2 + PROJECTION_COPIES * 500 * 100
    assert approx == int(8 * (grid_words + task_words)) + BASE_BYTES


def test_estimate_covers_the_measured_peaks():
    # Peak RSS growth measured for exact-grid fits (K = 2, 20 points per task, two EM
    # iterations): 1000 MiB at G = 2000 and 2251 MiB at G = 3000; K = 3: 1425 MiB.
    for k, g, measured_mib in [(2, 2000, 1000), (2, 3000, 2251), (3, 2000, 1425)]:
        need = estimate_fit_bytes(
            n_clusters=k, n_outputs=1, grid_size=g, n_tasks=g // 20, n_rows=g, approximate=False
        )
        assert measured_mib * 2**20 <= need <= 2.5 * measured_mib * 2**20
    # Approximate grid, 5000 tasks x 20 points, K = 2: 1264 MiB at M = 100, 7246 at 400.
    for m, measured_mib in [(100, 1264), (400, 7246)]:
        need = estimate_fit_bytes(
            n_clusters=2, n_outputs=1, grid_size=m, n_tasks=5000, n_rows=10**5, approximate=True
        )
        assert measured_mib * 2**20 <= need <= 1.5 * measured_mib * 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [("123", 123), ("16G", 16 * GIB), ("1.5 GiB", int(1.5 * GIB)), ("512m", 512 * 2**20)],
)
def test_limit_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv(LIMIT_ENV, text)
    assert available_bytes() == expected


def test_a_bad_limit_names_the_variable(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=f"{LIMIT_ENV}='lots' is not a size"):
        available_bytes()


def test_host_memory_is_read(monkeypatch):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    have = available_bytes()
    assert have is not None and 0 < have < 2**50


def test_no_reading_means_no_check(monkeypatch):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    monkeypatch.setattr(_memory, "_device_available", lambda: None)
    monkeypatch.setattr(_memory, "_host_available", lambda: None)
    check_fit_memory(
        n_clusters=2, n_outputs=1, grid_size=10**6, n_tasks=1, n_rows=10**6, approximate=False
    )


def test_check_names_the_size_the_estimate_and_the_option(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "4G")
    with pytest.raises(FitMemoryError) as info:
        check_fit_memory(
            n_clusters=2,
            n_outputs=1,
            grid_size=30000,
            n_tasks=1500,
            n_rows=30000,
            approximate=False,
        )
    text = str(info.value)
    assert "about 241.9 GiB" in text and "only 4.0 GiB is available" in text
    assert "exact grid of 30000 distinct inputs" in text and "grid='auto'" in text
    assert isinstance(info.value, MemoryError)
    with pytest.raises(FitMemoryError, match="5000 inducing inputs.*grid=M with M < 5000"):
        check_fit_memory(
            n_clusters=2, n_outputs=1, grid_size=5000, n_tasks=10, n_rows=200, approximate=True
        )


def test_forced_oversize_exact_grid_fails_before_the_fit():
    # 1500 tasks x 20 continuous random inputs: G = 30,000, the shape that crashed with
    # an XLA out-of-memory error. The estimate (~240 GiB) exceeds any machine of this
    # project's, so the fit stops before allocating anything large.
    X, y, _ = make_magma_data(n_tasks=1500, n_points=20, n_clusters=2, random_state=0)
    est = MagmaClusterRegressor(n_clusters=2, grid=None)
    with pytest.raises(MemoryError, match=r"exact grid of 30000 distinct inputs.*grid="):
        est.fit(X, y)
    assert not hasattr(est, "model_")


def test_the_fit_checks_with_its_own_sizes(monkeypatch):
    calls = []
    monkeypatch.setattr("mimosa_sklearn._estimator.check_fit_memory", lambda **kw: calls.append(kw))
    X, y, _ = make_magma_data(n_tasks=6, n_points=5, n_clusters=2, random_state=0)
    y2 = np.column_stack([y, 2 * y])
    MagmaClusterRegressor(n_clusters=2, grid=None, max_iter=1).fit(X, y2)
    MagmaClusterRegressor(n_clusters=2, grid=12, max_iter=1).fit(X, y2)
    MagmaClusterRegressor(n_clusters=2, correlated_outputs=True, max_iter=1).fit(X, y2)
    rows = 6 * 8  # six tasks of five rows, in eight row slots each
    assert calls == [
        dict(n_clusters=2, n_outputs=2, grid_size=30, n_tasks=6, n_rows=rows, approximate=False),
        dict(n_clusters=2, n_outputs=2, grid_size=12, n_tasks=6, n_rows=rows, approximate=True),
        # Correlated outputs stack (input, output) pairs: a grid of O G points.
        dict(n_clusters=2, n_outputs=1, grid_size=60, n_tasks=6, n_rows=rows, approximate=False),
    ]
