"""Masked factorisations and grid scatter/gather against dense numpy (ALGORITHM.md §3.3-3.4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from core_reference import embed, random_mask, selection, spd

from mimosa_sklearn.core import linalg

G, N, T = 9, 6, 4


def _mappings(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) mappings with padding (sentinel G) at random slots, and the row mask."""
    maps = np.full((T, N), G, dtype=np.int32)
    mask = np.zeros((T, N), dtype=bool)
    for i in range(T):
        n_i = int(rng.integers(1, N + 1))
        mask[i] = random_mask(rng, N, n_i)
        maps[i, mask[i]] = rng.choice(G, n_i, replace=False)
    assert not mask.all(axis=1).all(), "some padding must exist"
    return maps, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_scatter_matrix_and_vector_equal_dense_sums(seed):
    rng = np.random.default_rng(seed)
    maps, mask = _mappings(rng)
    blocks = rng.standard_normal((T, N, N))
    vecs = rng.standard_normal((T, N))
    # Garbage in padded rows/columns: the sentinel index must drop it.
    expected_m = np.zeros((G, G))
    expected_v = np.zeros(G)
    for i in range(T):
        p = selection(maps[i], mask[i], G)
        expected_m += p.T @ blocks[i][np.ix_(mask[i], mask[i])] @ p
        expected_v += p.T @ vecs[i][mask[i]]
    got_m = linalg.scatter_matrix(jnp.asarray(blocks), jnp.asarray(maps), G)
    got_v = linalg.scatter_vector(jnp.asarray(vecs), jnp.asarray(maps), G)
    np.testing.assert_allclose(np.asarray(got_m), expected_m, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(got_v), expected_v, rtol=0, atol=1e-13)
    # Tasks share grid points here, so the scatter really accumulates.
    assert np.bincount(maps[mask], minlength=G).max() > 1


def test_gather_matrix_and_vector_equal_dense_restriction():
    rng = np.random.default_rng(2)
    maps, mask = _mappings(rng)
    mat = rng.standard_normal((3, G, G))
    vec = rng.standard_normal((3, G))
    for i in range(T):
        p = selection(maps[i], mask[i], G)
        got_m = np.asarray(linalg.gather_matrix(jnp.asarray(mat), jnp.asarray(maps[i])))
        got_v = np.asarray(linalg.gather_vector(jnp.asarray(vec), jnp.asarray(maps[i])))
        for b in range(3):
            np.testing.assert_allclose(got_m[b][np.ix_(mask[i], mask[i])], p @ mat[b] @ p.T)
            np.testing.assert_allclose(got_v[b][mask[i]], p @ vec[b])
        # Padded entries read exactly zero (no clamping to the last grid point).
        assert np.all(got_m[:, ~mask[i], :] == 0) and np.all(got_m[:, :, ~mask[i]] == 0)
        assert np.all(got_v[:, ~mask[i]] == 0)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_masked_inverse_is_embedded_inverse_of_real_block(seed):
    rng = np.random.default_rng(seed)
    n_real = int(rng.integers(2, N))
    mask = random_mask(rng, N, n_real)
    cov = spd(rng, N)
    cov[~mask, :] = np.nan  # whatever the padded entries hold
    cov[:, ~mask] = np.nan
    expected = embed(np.linalg.inv(cov[np.ix_(mask, mask)]), mask)
    masked = linalg.identity_on_padding(jnp.asarray(cov), jnp.asarray(mask))
    chol = linalg.cholesky(masked)
    got = np.asarray(linalg.masked_inverse(chol, jnp.asarray(mask)))
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(got, got.T)
    # The factor is diag(chol(S_RR), I) up to the permutation: its log-determinant is the
    # real block's.
    _, logdet = np.linalg.slogdet(cov[np.ix_(mask, mask)])
    np.testing.assert_allclose(float(linalg.logdet_from_chol(chol)), logdet, rtol=1e-12)


def test_mask_cov_jitters_real_block_only_and_cho_solve_solves():
    rng = np.random.default_rng(6)
    mask = random_mask(rng, N, 4)
    cov = spd(rng, N)
    masked = np.asarray(linalg.identity_on_padding(jnp.asarray(cov), jnp.asarray(mask), 0.25))
    expected = np.eye(N)
    expected[np.ix_(mask, mask)] = cov[np.ix_(mask, mask)] + 0.25 * np.eye(4)
    np.testing.assert_array_equal(masked, expected)
    b = rng.standard_normal((N, 2))
    x = np.asarray(linalg.cho_solve(linalg.cholesky(jnp.asarray(cov)), jnp.asarray(b)))
    np.testing.assert_allclose(cov @ x, b, atol=1e-12)


def test_add_jitter_is_relative_to_mean_diagonal_with_unit_floor():
    big = np.diag([4.0, 8.0])
    small = np.diag([1e-3, 1e-3])
    np.testing.assert_allclose(
        np.asarray(linalg.add_jitter(jnp.asarray(big), 0.1)), big + 0.6 * np.eye(2)
    )
    np.testing.assert_allclose(
        np.asarray(linalg.add_jitter(jnp.asarray(small), 0.1)), small + 0.1 * np.eye(2)
    )


@pytest.mark.parametrize("n", [1, 2, 3, 7, 32, 33, 65])
def test_lower_inverse_equals_numpy_inverse(n):
    # Batched, odd and even sizes, against numpy.
    rng = np.random.default_rng(n)
    chols = np.stack([np.linalg.cholesky(spd(rng, n, 1.0)) for _ in range(3)]).reshape(3, 1, n, n)
    got = np.asarray(linalg.lower_inverse(jnp.asarray(chols)))
    want = np.linalg.inv(chols)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all(np.triu(got, 1) == 0.0)
    prec = np.asarray(linalg.inverse_from_chol(jnp.asarray(chols)))
    np.testing.assert_allclose(prec, np.linalg.inv(chols @ np.swapaxes(chols, -1, -2)), rtol=1e-9)


@pytest.mark.parametrize("n", [6, linalg.BLOCKED_PRODUCT_MIN, linalg.BLOCKED_PRODUCT_MIN + 3])
def test_symmetric_products_equal_plain_products(n):
    # Below BLOCKED_PRODUCT_MIN the plain products; from it on 2 x 2 blocks (odd sizes
    # too). Both must give the same matrices, exactly symmetric.
    rng = np.random.default_rng(n)
    v = rng.standard_normal((2, n + 2, n))
    w = np.stack([spd(rng, n), spd(rng, n, 3.0)])
    chol = np.linalg.cholesky(np.stack([spd(rng, n), spd(rng, n, 0.5)]))
    got_gram = np.asarray(linalg.gram(jnp.asarray(v)))
    got_cong = np.asarray(linalg.lower_congruence(jnp.asarray(w), jnp.asarray(chol)))
    want_gram = np.swapaxes(v, -1, -2) @ v
    want_cong = np.swapaxes(chol, -1, -2) @ w @ chol
    np.testing.assert_allclose(
        got_gram, want_gram, rtol=1e-11, atol=1e-11 * np.abs(want_gram).max()
    )
    np.testing.assert_allclose(
        got_cong, want_cong, rtol=1e-11, atol=1e-11 * np.abs(want_cong).max()
    )
    np.testing.assert_array_equal(got_cong, np.swapaxes(got_cong, -1, -2))
    np.testing.assert_array_equal(got_gram, np.swapaxes(got_gram, -1, -2))


def test_cholesky_symmetrises_and_matches_numpy_and_jax_gradients():
    import jax

    rng = np.random.default_rng(3)
    s = spd(rng, 7)
    skew = 1e-3 * rng.standard_normal((7, 7))
    # The factor of the symmetric part, as jnp.linalg.cholesky gives.
    got = np.asarray(linalg.cholesky(jnp.asarray(s + skew)))
    np.testing.assert_allclose(got, np.linalg.cholesky(s + 0.5 * (skew + skew.T)), rtol=1e-12)
    # Not positive definite: NaN on and below the diagonal, as jnp.linalg.cholesky.
    assert np.all(np.isnan(np.asarray(linalg.cholesky(jnp.asarray(-s)))[np.tril_indices(7)]))

    def logdet(fn, a):
        return jnp.sum(jnp.log(jnp.diagonal(fn(a + jnp.eye(7) * a[0, 1] ** 2))))

    a = jnp.asarray(s + skew)
    np.testing.assert_allclose(
        np.asarray(jax.grad(lambda m: logdet(linalg.cholesky, m))(a)),
        np.asarray(jax.grad(lambda m: logdet(jnp.linalg.cholesky, m))(a)),
        rtol=1e-10,
        atol=1e-12,
    )


def test_sum_over_chunks_equals_the_plain_sum():
    from mimosa_sklearn.core.parallel import sum_over_chunks

    x = jnp.arange(48.0).reshape(24, 2)
    w = jnp.linspace(0.5, 2.0, 24)

    def weighted(args):
        xc, wc = args
        return {"s": jnp.sum(wc[:, None] * xc, axis=0), "n": jnp.sum(wc)}

    expected = weighted((x, w))
    for chunk in (1, 5, 8, 24, 0):  # 5: the nearest divisor of 24 below it, 4
        out = sum_over_chunks(weighted, (x, w), chunk)
        np.testing.assert_allclose(np.asarray(out["s"]), np.asarray(expected["s"]), rtol=1e-14)
        np.testing.assert_allclose(float(out["n"]), float(expected["n"]), rtol=1e-14)
