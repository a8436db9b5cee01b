"""Hyperposteriors of the mean processes (ALGORITHM.md §2.2a, §3.7, §8.4, §8.6)."""

from __future__ import annotations

import core_reference as ref
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em
from mimosa_sklearn.core import hyperposterior as hp
from mimosa_sklearn.core.compile import jit


@jit
def hyperposterior(tau, precisions, weighted_y, mappings, prior_chol, prior_mean):
    """The VE-step's hyperposterior of all tasks at once: sums, then posterior."""
    w, b = hp.precision_sums(tau, precisions, weighted_y, mappings, prior_chol.shape[-1])
    return hp.posterior_from_sums(w, b, prior_chol, prior_mean)


e_step = jit(lambda *args: em.e_step(*args)[:2])
elbo = jit(em.elbo)

T, N, NOUT, K = 5, 6, 2, 2
GRID = np.linspace(0.0, 7.0, 8)[:, None]


def _numpy_inputs(vals: ref.NpParams, tasks: ref.Tasks, kt: int):
    """Precisions, Psi^-1 y (zero on padding), prior factors and means, all in numpy."""
    t, n, o_n = tasks.shape
    prec = np.zeros((t, kt, o_n, n, n))
    for i in range(t):
        for k in range(kt):
            for o in range(o_n):
                m = tasks.mask[i, :, o]
                psi = vals.task_cov(i, k, o, tasks.x[i][m])
                prec[i, k, o] = ref.embed(np.linalg.inv(psi), m)
    weighted = np.einsum("tkonm,tom->tkon", prec, np.swapaxes(tasks.y, 1, 2))
    kc, oc = vals.mean_var.shape
    chol = np.stack(
        [
            [np.linalg.cholesky(vals.mean_cov(k, o, GRID, GRID)) for o in range(oc)]
            for k in range(kc)
        ]
    )
    prior_mean = np.stack(
        [
            [vals.prior_mean(k, o, GRID.shape[0]) for o in range(vals.prior.shape[1])]
            for k in range(K)
        ]
    )
    return prec, weighted, chol, prior_mean


@pytest.mark.parametrize(
    ("shared_cluster", "shared_output", "cluster_specific"),
    [(False, False, False), (True, True, True), (False, True, True)],
)
def test_whitened_hyperposterior_equals_direct_precision_form(
    shared_cluster, shared_output, cluster_specific
):
    rng = np.random.default_rng(int(shared_cluster) + 2 * int(shared_output) + 4 * cluster_specific)
    tasks = ref.make_tasks(rng, T, N, GRID, 2, N, n_outputs=NOUT, hole_prob=0.3)
    # Different masks per output: the hyperposterior covariances must differ per output.
    assert not np.array_equal(tasks.mask[..., 0], tasks.mask[..., 1])
    layout = SharingLayout.from_flags(
        T,
        K,
        NOUT,
        shared_task_hps=False,
        shared_cluster_hps=shared_cluster,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=shared_output,
    )
    _, vals = ref.random_params(rng, layout)
    tau = rng.dirichlet(np.ones(K), size=T)
    kt = layout.task[1]
    prec, weighted, chol, prior_mean = _numpy_inputs(vals, tasks, kt)
    mappings = jnp.asarray(tasks.mappings, dtype=jnp.int32)
    post = hyperposterior(
        *[jnp.asarray(a) for a in (tau, prec, weighted)],
        mappings,
        jnp.asarray(chol),
        jnp.asarray(prior_mean),
    )
    mean, cov = ref.hyperposterior(vals, tasks, tau)
    np.testing.assert_allclose(np.asarray(post.mean), mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(post.cov), cov, rtol=1e-9, atol=1e-10)
    logdet = np.linalg.slogdet(cov)[1]
    np.testing.assert_allclose(np.asarray(post.logdet), logdet, rtol=1e-9)
    # The stored factors reproduce C_hat = L (I + L^T W L)^-1 L^T.
    lr = np.linalg.solve(
        np.asarray(post.whitened_chol), np.swapaxes(np.asarray(post.prior_chol), -1, -2)
    )
    np.testing.assert_allclose(np.swapaxes(lr, -1, -2) @ lr, cov, rtol=1e-9, atol=1e-10)
    assert not np.allclose(cov[:, 0], cov[:, 1])
    # KL(q || p) from the whitened factors equals the closed form of two Gaussians.
    prior_cov = chol @ np.swapaxes(chol, -1, -2)
    prior_cov, pm = np.broadcast_to(prior_cov, cov.shape), np.broadcast_to(prior_mean, mean.shape)
    kl = np.zeros((K, NOUT))
    for k in range(K):
        for o in range(NOUT):
            c_inv = np.linalg.inv(prior_cov[k, o])
            d = mean[k, o] - pm[k, o]
            kl[k, o] = 0.5 * (
                np.trace(c_inv @ cov[k, o])
                + d @ c_inv @ d
                - GRID.shape[0]
                + np.linalg.slogdet(prior_cov[k, o])[1]
                - logdet[k, o]
            )
    np.testing.assert_allclose(np.asarray(hp.prior_kl(post)), kl, rtol=1e-8)
    assert np.all(kl > 0)


def test_isotopic_closed_form_with_shared_task_covariance():
    # ALGORITHM.md §8.6: every task observed on the whole grid with one Psi, K = 1:
    # C_hat = (C^-1 + T Psi^-1)^-1, m_hat = C_hat (C^-1 m + Psi^-1 sum_i y_i).
    rng = np.random.default_rng(11)
    g = GRID.shape[0]
    t = 4
    x = np.repeat(GRID[None], t, axis=0)
    mappings = np.repeat(np.arange(g)[None], t, axis=0)
    for i in range(t):  # each task stores the grid in its own order
        perm = rng.permutation(g)
        x[i], mappings[i] = x[i][perm], mappings[i][perm]
    y = rng.standard_normal((t, g, 1))
    tasks = ref.Tasks(
        x=x,
        y=y,
        mask=np.ones((t, g, 1), bool),
        row=np.ones((t, g), bool),
        mappings=mappings,
        grid=GRID,
    )
    layout = SharingLayout.from_flags(t, 1, 1)
    params, vals = ref.random_params(rng, layout)
    post, tau = e_step(params, jnp.ones(1), jnp.ones((t, 1)), ref.to_batch(tasks), 0.0)
    c = vals.mean_cov(0, 0, GRID, GRID)
    psi = vals.task_cov(0, 0, 0, GRID)
    c_inv, psi_inv = np.linalg.inv(c), np.linalg.inv(psi)
    c_hat = np.linalg.inv(c_inv + t * psi_inv)
    y_sum = np.zeros(g)
    for i in range(t):
        y_sum[mappings[i]] += y[i, :, 0]
    m_hat = c_hat @ (c_inv @ vals.prior_mean(0, 0, g) + psi_inv @ y_sum)
    np.testing.assert_allclose(np.asarray(post.cov[0, 0]), c_hat, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(post.mean[0, 0]), m_hat, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(np.asarray(tau), np.ones((t, 1)))


def test_padded_grid_points_change_nothing():
    # Padded grid points (grid_mask False) get an identity prior and no data: the real part
    # of q(mu), log|C_hat| and the ELBO (KL included) must be exactly those of the unpadded
    # grid, with the default relative jitter.
    rng = np.random.default_rng(12)
    tasks = ref.make_tasks(rng, T, N, GRID, 2, N, n_outputs=NOUT, hole_prob=0.3)
    layout = SharingLayout.from_flags(T, K, NOUT, shared_cluster_hps=False, shared_output_hps=False)
    params, _ = ref.random_params(rng, layout)
    tau = jnp.asarray(rng.dirichlet(np.ones(K), size=T))
    weights = jnp.mean(tau, axis=0)
    g = GRID.shape[0]
    out = []
    for pad in (0, 5):
        batch = ref.to_batch(tasks, grid_pad=pad)
        post, new_tau = e_step(params, weights, tau, batch, 1e-6)
        out.append((post, new_tau, float(elbo(params, weights, new_tau, post, batch, 1e-6))))
    (p0, tau0, l0), (p1, tau1, l1) = out
    np.testing.assert_allclose(
        np.asarray(p1.mean[..., :g]), np.asarray(p0.mean), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        np.asarray(p1.cov[..., :g, :g]), np.asarray(p0.cov), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(np.asarray(p1.logdet), np.asarray(p0.logdet), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(tau1), np.asarray(tau0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(l1, l0, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(hp.prior_kl(p1)), np.asarray(hp.prior_kl(p0)), rtol=1e-10)
    # The padded block is the identity prior, untouched and uncorrelated with the real part.
    np.testing.assert_allclose(np.asarray(p1.mean[..., g:]), 0.0, atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(p1.cov[..., g:, g:]), np.broadcast_to(np.eye(5), (K, NOUT, 5, 5)), atol=1e-14
    )
    np.testing.assert_allclose(np.asarray(p1.cov[..., :g, g:]), 0.0, atol=1e-14)


@pytest.mark.parametrize("kt", [1, 3])
@pytest.mark.parametrize("budget", [1 << 20, 200])
def test_projected_precision_equals_a_loop_over_tasks_clusters_and_outputs(monkeypatch, kt, budget):
    # budget=200 elements: chunks of 8 tasks over 24 tasks, so the chunked sum runs.
    monkeypatch.setattr(hp, "_PROJECTION_CHUNK_BUDGET", budget)
    rng = np.random.default_rng(5)
    t, k, o, n, g = 24, 3, 2, 4, 5
    tau = rng.dirichlet(np.ones(k), size=t)
    proj = rng.normal(size=(t, n, g))
    half = rng.normal(size=(t, kt, o, n, n))
    prec = half @ np.swapaxes(half, -1, -2)
    out = np.asarray(hp.projected_precision(jnp.asarray(tau), jnp.asarray(prec), jnp.asarray(proj)))
    expected = np.zeros((k, o, g, g))
    for i in range(t):
        for c in range(k):
            for j in range(o):
                p = prec[i, c if kt > 1 else 0, j]
                expected[c, j] += tau[i, c] * proj[i].T @ p @ proj[i]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
