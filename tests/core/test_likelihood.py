"""Masked NLLs, trace corrections and their vmapped forms (ALGORITHM.md §3.4-3.6, §8.1-8.2)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest
import scipy.linalg as sla
from core_reference import LOG_2PI, gaussian_nll, random_mask, se, spd
from jax.test_util import check_grads
from scipy.stats import multivariate_normal

from mimosa_sklearn.core import likelihood as lk
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.linalg import logdet_from_chol, masked_inverse

N = 7

# Compiled once per shape: far cheaper than eager op-by-op dispatch of the vmapped code.
masked_nll = jit(lk.masked_nll)
trace_correction = jit(lk.trace_correction)
full_nll = jit(lk.full_nll)
moment_nll = jit(lk.moment_nll)
cluster_nlls = jit(lk.cluster_nlls)
task_nlls = jit(lk.task_nlls)


def _padded_problem(seed: int, n_real: int, scale: float = 1.0):
    """Random y, mean, SPD cov of size N with padding at random slots holding NaN."""
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, N, n_real)
    cov = spd(rng, N, scale)
    y = rng.standard_normal(N)
    mean = rng.standard_normal(N)
    real = (cov.copy(), y.copy(), mean.copy())
    y[~mask] = np.nan
    mean[~mask] = np.nan
    cov[~mask, :] = np.nan
    cov[:, ~mask] = np.nan
    return rng, mask, (y, mean, cov), real


def _j(*arrays):
    return [jnp.asarray(a) for a in arrays]


# --------------------------------------------------------------------------- masked NLL


@pytest.mark.parametrize(("seed", "n_real"), [(0, 1), (1, 3), (2, 5), (3, 7)])
def test_masked_nll_equals_scipy_on_real_subvector(seed, n_real):
    _, mask, (y, mean, cov), (cov_r, y_r, mean_r) = _padded_problem(seed, n_real)
    r = mask
    expected = -multivariate_normal(mean_r[r], cov_r[np.ix_(r, r)]).logpdf(y_r[r])
    got = masked_nll(*_j(y, mean, cov, mask))
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), expected, rtol=1e-10, atol=1e-10)
    no_const = masked_nll(*_j(y, mean, cov, mask), constant=False)
    np.testing.assert_allclose(float(got - no_const), 0.5 * n_real * LOG_2PI, rtol=1e-12)


def test_masked_nll_with_no_real_entry_is_zero():
    _, mask, (y, mean, cov), _ = _padded_problem(4, 0)
    assert float(masked_nll(*_j(y, mean, cov, mask), jitter=1e-6)) == 0.0


def test_masked_nll_jitter_goes_on_real_block_only():
    # jitter * max(mean diag, 1): the unit floor applies at scale 1, so the jittered NLL is
    # the NLL of S_RR + 1e-3 I exactly, and padded entries add nothing.
    _, mask, (y, mean, cov), (cov_r, y_r, mean_r) = _padded_problem(5, 4, scale=0.1)
    r = mask
    expected = gaussian_nll(y_r[r], mean_r[r], cov_r[np.ix_(r, r)] + 1e-3 * np.eye(4))
    got = masked_nll(*_j(y, mean, cov, mask), jitter=1e-3)
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)


def test_jittered_masked_nll_does_not_depend_on_padding():
    # ALGORITHM.md §8.1: padded NLL == NLL of the real sub-vector (jitter applied before
    # masking). A variance of 10 puts the mean diagonal above the unit floor.
    _, mask, (y, mean, cov), (cov_r, y_r, mean_r) = _padded_problem(6, 3, scale=10.0)
    r = mask
    padded = masked_nll(*_j(y, mean, cov, mask), jitter=1e-6)
    unpadded = masked_nll(
        *_j(y_r[r], mean_r[r], cov_r[np.ix_(r, r)], np.ones(3, bool)), jitter=1e-6
    )
    np.testing.assert_allclose(float(padded), float(unpadded), rtol=1e-12)


# --------------------------------------------------------------------------- gradients


def _kernel_nll(kernel, log_noise, x, y, mask):
    """NLL of a GP (kernax kernel + noise) on padded inputs: padded rows replaced by 0."""
    x_safe = jnp.where(mask[:, None], x, 0.0)
    cov = kernel(x_safe, x_safe) + jnp.exp(log_noise) * jnp.eye(x.shape[0])
    return masked_nll(y, jnp.zeros_like(y), cov, mask)


def _numpy_se_nll_grad(x, y, variance, length_scale, noise):
    """Analytic gradient of the SE-GP NLL w.r.t. (log variance, log length scale, log noise):
    ``0.5 tr((S^-1 - a a^T) dS)``."""
    k = se(x, x, variance, length_scale)
    s = k + noise * np.eye(x.shape[0])
    s_inv = np.linalg.inv(s)
    a = s_inv @ y
    inner = s_inv - np.outer(a, a)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    derivs = [k, k * d2 / length_scale**2, noise * np.eye(x.shape[0])]
    return np.array([0.5 * np.sum(inner * d) for d in derivs])


def test_masked_nll_gradient_wrt_kernel_hyperparameters_equals_unpadded():
    rng = np.random.default_rng(7)
    mask = random_mask(rng, N, 4)
    x = np.sort(rng.uniform(0, 5, size=(N, 1)), axis=0)
    y = rng.standard_normal(N)
    x[~mask] = np.nan
    y[~mask] = np.nan
    kernel = kernax.VarianceKernel(1.3) * kernax.SEKernel(0.8)
    kernel = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if eqx.is_array(a) else a, kernel)
    log_noise = jnp.asarray(np.log(0.1))

    def loss(hps):
        kern, ln = hps
        return _kernel_nll(kern, ln, jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))

    g_kernel, g_noise = jit(eqx.filter_grad(loss))((kernel, log_noise))
    got = np.array(
        [float(g_kernel.left._variance), float(g_kernel.right._length_scale), float(g_noise)]
    )
    assert np.all(np.isfinite(got))
    expected = _numpy_se_nll_grad(x[mask], y[mask], 1.3, 0.8, 0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)

    # The same NLL without the safe inputs: NaN inputs poison every gradient even though the
    # forward value is masked, which is why the core never feeds them to a kernel.
    def unsafe(kern):
        xx = jnp.asarray(x)
        cov = kern(xx, xx) + 0.1 * jnp.eye(N)
        return masked_nll(jnp.asarray(y), jnp.zeros(N), cov, jnp.asarray(mask))

    assert np.isfinite(float(jit(unsafe)(kernel)))
    assert np.isnan(float(jit(eqx.filter_grad(unsafe))(kernel).left._variance))


# --------------------------------------------------------------------------- trace term


def _seed_notebook_trace(cov: np.ndarray, post_cov: np.ndarray) -> float:
    """The seed notebook's (wrong) formula: upper factors, ``||U_S^{-1} U_C||_F^2 / 2``."""
    u_s = np.linalg.cholesky(cov).T
    u_c = np.linalg.cholesky(post_cov).T
    v = sla.solve_triangular(u_s, u_c, lower=False)
    return 0.5 * float(np.sum(v**2))


@pytest.mark.parametrize(("seed", "n_real"), [(10, 3), (11, 5), (12, 7)])
def test_trace_correction_equals_dense_trace_for_non_commuting_matrices(seed, n_real):
    rng, mask, (_, _, cov), (cov_r, _, _) = _padded_problem(seed, n_real)
    post = spd(rng, N)
    r = mask
    s_rr, c_rr = cov_r[np.ix_(r, r)], post[np.ix_(r, r)]
    assert not np.allclose(s_rr @ c_rr, c_rr @ s_rr), "the matrices must not commute"
    expected = 0.5 * np.trace(np.linalg.solve(s_rr, c_rr))
    post_nan = post.copy()
    post_nan[~mask] = np.nan
    post_nan[:, ~mask] = np.nan
    got = float(trace_correction(*_j(cov, post_nan, mask)))
    np.testing.assert_allclose(got, expected, rtol=1e-11)
    # The test would catch the seed notebook's upper-factor formula.
    wrong = _seed_notebook_trace(s_rr, c_rr)
    assert abs(wrong - expected) > 1e-3 * abs(expected)


def test_full_nll_is_masked_nll_plus_trace():
    rng, mask, (y, mean, cov), _ = _padded_problem(13, 4)
    post = spd(rng, N)
    args = _j(y, mean, cov, post, mask)
    full = full_nll(*args)
    parts = masked_nll(*_j(y, mean, cov, mask)) + trace_correction(*_j(cov, post, mask))
    np.testing.assert_allclose(float(full), float(parts), rtol=1e-14)


# --------------------------------------------------------------------------- moment form


def test_moment_nll_equals_masked_nll_plus_trace_and_mixes_clusters():
    # ALGORITHM.md §2.3/§8.8: with S = d d^T + C_hat (zero on padding),
    # 0.5 [log|Psi| + tr(Psi^-1 S) + n log 2pi] == NLL(y; m, Psi) + 0.5 tr(Psi^-1 C_hat),
    # and the tau-weighted sum over clusters is the moment form of the mixed second moment.
    rng, mask, (y, _, cov), _ = _padded_problem(14, 5)
    k_n = 3
    means = rng.standard_normal((k_n, N))
    posts = np.stack([spd(rng, N, 0.3) for _ in range(k_n)])
    tau = rng.dirichlet(np.ones(k_n))
    both = mask[:, None] & mask[None, :]
    masked = lk.factorable_cov(jnp.asarray(cov), jnp.asarray(mask), 0.0)
    n_real = jnp.asarray(float(mask.sum()))
    full = []
    moments = []
    for k in range(k_n):
        full.append(float(full_nll(*_j(y, means[k], cov, posts[k], mask))))
        d = np.where(mask, y - means[k], 0.0)
        moments.append(np.where(both, np.outer(d, d) + posts[k], 0.0))
        one = moment_nll(masked, jnp.asarray(moments[k]), jnp.asarray(1.0), n_real)
        np.testing.assert_allclose(float(one), full[k], rtol=1e-12)
    mixed = np.tensordot(tau, np.stack(moments), axes=1)
    got = moment_nll(masked, jnp.asarray(mixed), jnp.asarray(1.0), n_real)
    np.testing.assert_allclose(float(got), float(tau @ np.array(full)), rtol=1e-12)
    # Unnormalised weights (cluster-specific task covariances weight each term by tau_ik).
    w = 0.37
    got_w = moment_nll(masked, jnp.asarray(w * moments[0]), jnp.asarray(w), n_real)
    np.testing.assert_allclose(float(got_w), w * full[0], rtol=1e-12)


def test_logdet_and_trace_custom_gradient_equals_autodiff_and_finite_differences():
    # The closed-form VJP (P and -P M^T P) against autodiff through slogdet and solve,
    # with a non-symmetric M, a batch axis and unequal cotangents for the two outputs.
    rng = np.random.default_rng(5)
    covs = jnp.asarray(np.stack([spd(rng, 6, 0.2) for _ in range(3)]))
    moms = jnp.asarray(rng.standard_normal((3, 6, 6)))
    g1, g2 = jnp.asarray(rng.standard_normal(3)), jnp.asarray(rng.standard_normal(3))

    def custom(c, m):
        logdet, trace = lk.logdet_and_trace(c, m)
        return jnp.sum(g1 * logdet + g2 * trace)

    def plain(c, m):
        logdet = jnp.linalg.slogdet(c)[1]
        trace = jnp.trace(jnp.linalg.solve(c, m), axis1=-2, axis2=-1)
        return jnp.sum(g1 * logdet + g2 * trace)

    np.testing.assert_allclose(float(custom(covs, moms)), float(plain(covs, moms)), rtol=1e-12)
    got = jax.grad(custom, argnums=(0, 1))(covs, moms)
    want = jax.grad(plain, argnums=(0, 1))(covs, moms)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-11)

    # Finite differences along symmetric directions (a factorisation reads one triangle).
    def sym(a, m):
        return custom(0.5 * (a + jnp.swapaxes(a, -1, -2)), m)

    check_grads(sym, (covs, moms), order=1, modes=("rev",))


def test_logdet_and_factored_trace_equals_the_explicit_second_moment_and_its_gradient():
    # (log|S|, tr(S^-1 (F F^T + R R^T))) and its closed-form VJP against autodiff through
    # slogdet and solve of the explicit moment; F is a constant (zero cotangent).
    rng = np.random.default_rng(6)
    g, f, r = 7, 7, 3
    covs = jnp.asarray(np.stack([spd(rng, g, 0.2) for _ in range(2)]))
    fixed = jnp.asarray(rng.standard_normal((2, g, f)))
    cols = jnp.asarray(rng.standard_normal((2, g, r)))
    g1, g2 = jnp.asarray(rng.standard_normal(2)), jnp.asarray(rng.standard_normal(2))

    def custom(c, fx, rc):
        logdet, trace = lk.logdet_and_factored_trace(c, fx, rc)
        return jnp.sum(g1 * logdet + g2 * trace)

    def plain(c, fx, rc):
        mom = fx @ jnp.swapaxes(fx, -1, -2) + rc @ jnp.swapaxes(rc, -1, -2)
        logdet = jnp.linalg.slogdet(c)[1]
        trace = jnp.trace(jnp.linalg.solve(c, mom), axis1=-2, axis2=-1)
        return jnp.sum(g1 * logdet + g2 * trace)

    np.testing.assert_allclose(
        float(custom(covs, fixed, cols)), float(plain(covs, fixed, cols)), rtol=1e-12
    )
    got = jax.grad(custom, argnums=(0, 1, 2))(covs, fixed, cols)
    want = jax.grad(plain, argnums=(0, 1, 2))(covs, fixed, cols)
    # S is symmetric: compare the symmetrised cotangents (autodiff's is not symmetric).
    sym = lambda a: 0.5 * (a + np.swapaxes(a, -1, -2))  # noqa: E731
    np.testing.assert_allclose(
        sym(np.asarray(got[0])), sym(np.asarray(want[0])), rtol=1e-9, atol=1e-11
    )
    np.testing.assert_array_equal(np.asarray(got[1]), 0.0)
    np.testing.assert_allclose(np.asarray(got[2]), np.asarray(want[2]), rtol=1e-9, atol=1e-11)

    def along_sym(a, rc):
        return custom(0.5 * (a + jnp.swapaxes(a, -1, -2)), fixed, rc)

    check_grads(along_sym, (covs, cols), order=1, modes=("rev",), eps=1e-6)


def test_moment_nll_gradient_through_kernel_matches_finite_differences():
    # End to end through a padded, jittered kernel matrix: the custom VJP composes with
    # the masking and the data-dependent jitter.
    rng, mask, _, _ = _padded_problem(11, 7)
    x = jnp.asarray(np.sort(rng.uniform(0.0, 5.0, N)))
    mom = jnp.asarray(np.where(mask[:, None] & mask[None, :], spd(rng, N, 0.5), 0.0))
    mask_j = jnp.asarray(mask)
    n_real = jnp.asarray(float(mask.sum()))

    def f(log_ls, log_var):
        d = (x[:, None] - x[None, :]) / jnp.exp(log_ls)
        cov = jnp.exp(log_var) * jnp.exp(-0.5 * d**2) + 0.1 * jnp.eye(N)
        return moment_nll(lk.factorable_cov(cov, mask_j, 1e-6), mom, jnp.asarray(1.0), n_real)

    check_grads(f, (jnp.asarray(0.3), jnp.asarray(-0.2)), order=1, modes=("rev",))


# --------------------------------------------------------------------------- vmapped forms


def _brute_cluster_nlls(post_means, post_covs, prior_means, prior_covs):
    k_n, o_n, _ = post_means.shape
    out = np.zeros((k_n, o_n))
    for k in range(k_n):
        for o in range(o_n):
            kp, op = min(k, prior_means.shape[0] - 1), min(o, prior_means.shape[1] - 1)
            kc, oc = min(k, prior_covs.shape[0] - 1), min(o, prior_covs.shape[1] - 1)
            c = prior_covs[kc, oc]
            out[k, o] = gaussian_nll(post_means[k, o], prior_means[kp, op], c)
            out[k, o] += 0.5 * np.trace(np.linalg.solve(c, post_covs[k, o]))
    return out


@pytest.mark.parametrize(("kc", "oc"), [(1, 1), (3, 1), (1, 2), (3, 2)])
def test_cluster_nlls_match_loops_and_broadcasting_matches_replication(kc, oc):
    rng = np.random.default_rng(20 + 2 * kc + oc)
    k_n, o_n, g = 3, 2, 5
    post_means = rng.standard_normal((k_n, o_n, g))
    post_covs = np.stack([[spd(rng, g, 0.2) for _ in range(o_n)] for _ in range(k_n)])
    prior_means = rng.standard_normal((kc, oc, g))
    prior_covs = np.stack([[spd(rng, g) for _ in range(oc)] for _ in range(kc)])
    got = np.asarray(cluster_nlls(*_j(post_means, post_covs, prior_means, prior_covs)))
    assert got.shape == (k_n, o_n)
    expected = _brute_cluster_nlls(post_means, post_covs, prior_means, prior_covs)
    np.testing.assert_allclose(got, expected, rtol=1e-11)
    reps = (k_n // kc, o_n // oc, 1)
    explicit = cluster_nlls(
        *_j(post_means, post_covs, np.tile(prior_means, reps), np.tile(prior_covs, reps + (1,)))
    )
    np.testing.assert_allclose(np.asarray(explicit), got, rtol=1e-14)


def _task_problem(seed: int):
    """T=4 tasks, N=6 slots (random padding), O=2 outputs with their own holes, G=8."""
    rng = np.random.default_rng(seed)
    t, n, o_n, g, k_n = 4, 6, 2, 8, 3
    mappings = np.full((t, n), g)
    row = np.zeros((t, n), bool)
    for i in range(t):
        n_i = int(rng.integers(2, n + 1))
        row[i] = random_mask(rng, n, n_i)
        mappings[i, row[i]] = rng.choice(g, n_i, replace=False)
    mask = row[..., None] & (rng.random((t, n, o_n)) > 0.25)
    mask[:, :, :] |= row[..., None] & (np.cumsum(row, axis=1) == 1)[..., None]
    y = np.where(mask, rng.standard_normal((t, n, o_n)), np.nan)
    post_means = rng.standard_normal((k_n, o_n, g))
    post_covs = np.stack([[spd(rng, g, 0.2) for _ in range(o_n)] for _ in range(k_n)])
    return rng, y, mask, mappings, post_means, post_covs


def _brute_task_nlls(y, mask, mappings, post_means, post_covs, task_covs):
    t, _, o_n = y.shape
    k_n = post_means.shape[0]
    out = np.zeros((t, k_n, o_n))
    for i in range(t):
        for k in range(k_n):
            for o in range(o_n):
                r = mask[i, :, o]
                idx = mappings[i][r]
                ti = min(i, task_covs.shape[0] - 1)
                ki = min(k, task_covs.shape[1] - 1)
                oi = min(o, task_covs.shape[2] - 1)
                psi = task_covs[ti, ki, oi][np.ix_(r, r)]
                oc = min(o, post_covs.shape[1] - 1)
                c_hat = post_covs[k, oc][np.ix_(idx, idx)]
                out[i, k, o] = gaussian_nll(y[i, r, o], post_means[k, o, idx], psi)
                out[i, k, o] += 0.5 * np.trace(np.linalg.solve(psi, c_hat))
    return out


@pytest.mark.parametrize(
    ("tt", "kt", "ot"), [(1, 1, 1), (4, 1, 1), (1, 3, 1), (1, 1, 2), (4, 3, 2)]
)
def test_task_nlls_match_loops_and_broadcasting_matches_replication(tt, kt, ot):
    rng, y, mask, mappings, post_means, post_covs = _task_problem(30 + tt + kt + ot)
    n = y.shape[1]
    task_covs = np.stack([[[spd(rng, n) for _ in range(ot)] for _ in range(kt)] for _ in range(tt)])
    # Padded rows/columns of task-specific covariances hold NaN: they must never leak.
    pad = ~mask.any(axis=2)
    for i in range(tt if tt > 1 else 0):
        task_covs[i, :, :, pad[i], :] = np.nan
        task_covs[i, :, :, :, pad[i]] = np.nan
    args = _j(y, mask, mappings, post_means, post_covs)
    got = np.asarray(task_nlls(*args, jnp.asarray(task_covs)))
    assert got.shape == (4, 3, 2) and np.all(np.isfinite(got))
    expected = _brute_task_nlls(y, mask, np.asarray(mappings), post_means, post_covs, task_covs)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # The VE-step's variant, from precisions and log-determinants computed once.
    covs = jnp.asarray(np.broadcast_to(task_covs, (4, kt, 2, n, n)))
    m = jnp.broadcast_to(jnp.swapaxes(jnp.asarray(mask), 1, 2)[:, None], (4, kt, 2, n))
    both = m[..., :, None] & m[..., None, :]
    chol = lk.masked_factor(jnp.where(both, covs, 0.0), m, 0.0)
    prec, logdet = masked_inverse(chol, m), logdet_from_chol(chol)
    reused = lk.task_nlls_from_precisions(*args, prec, logdet)
    np.testing.assert_allclose(np.asarray(reused), expected, rtol=1e-9)
    full = np.broadcast_to(task_covs, (4, kt, 2, n, n)).copy()
    if kt == 1:
        full = np.repeat(full, 3, axis=1)  # K copies: now it is cluster-specific, same values
    explicit = task_nlls(*args, jnp.asarray(full))
    np.testing.assert_allclose(np.asarray(explicit), got, rtol=1e-13)
    # Hyperposterior covariances shared across outputs (O* = 1) broadcast too.
    shared = task_nlls(*_j(y, mask, mappings, post_means, post_covs[:, :1]), jnp.asarray(task_covs))
    two = task_nlls(
        *_j(y, mask, mappings, post_means, np.repeat(post_covs[:, :1], 2, 1)),
        jnp.asarray(task_covs),
    )
    np.testing.assert_allclose(np.asarray(shared), np.asarray(two), rtol=1e-14)


def test_task_nlls_without_constant_drop_exactly_the_log_2pi_term():
    rng, y, mask, mappings, post_means, post_covs = _task_problem(40)
    task_covs = spd(rng, y.shape[1])[None, None, None]
    args = _j(y, mask, mappings, post_means, post_covs, task_covs)
    diff = np.asarray(task_nlls(*args) - task_nlls(*args, constant=False))
    expected = 0.5 * mask.sum(axis=1)[:, None, :] * LOG_2PI
    np.testing.assert_allclose(diff, np.broadcast_to(expected, diff.shape), rtol=1e-12)
