"""Variational EM: ELBO, coordinate ascent, monotonicity, sharing variants (ALGORITHM §2, §8)."""

from __future__ import annotations

import itertools

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import _fit
from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em, memberships, mstep
from mimosa_sklearn.core.clusters import pad_clusters
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.hyperposterior import Hyperposterior

e_step = jit(lambda *args: em.e_step(*args)[:2])
elbo = jit(em.elbo)


@jit
def _m_objective(params, tau, post, batch, jitter):
    """The VM-step objective ``sum_k J^mu_k + sum_i J^f_i`` at fixed q."""
    moments, mweights = mstep.task_moments(batch, tau, post, params.log_noise.shape[1])
    return mstep.total_objective(params, post, batch, moments, mweights, jitter)


T, N, NOUT = 5, 6, 2
GRID = np.linspace(0.0, 7.0, 8)[:, None]


def _setup(seed: int, k: int, **flags):
    rng = np.random.default_rng(seed)
    tasks = ref.make_tasks(rng, T, N, GRID, 2, N, n_outputs=NOUT, hole_prob=0.3)
    layout = SharingLayout.from_flags(T, k, NOUT, **flags)
    params, vals = ref.random_params(rng, layout)
    return rng, tasks, ref.to_batch(tasks), params, vals


def _reference_e_step(vals, tasks, weights, tau):
    """numpy hyperposterior ``(mean, cov)`` under ``tau`` and the new responsibilities."""
    mean, cov = ref.hyperposterior(vals, tasks, tau)
    logits = np.log(weights)[None] + ref.expected_loglik(vals, tasks, mean, cov)
    new_tau = np.exp(logits - logits.max(1, keepdims=True))
    return mean, cov, new_tau / new_tau.sum(1, keepdims=True)


def _with_post(post: Hyperposterior, mean=None, cov=None) -> Hyperposterior:
    """A hyperposterior with a replaced mean and/or covariance (and a consistent logdet)."""
    if mean is not None:
        post = eqx.tree_at(lambda p: p.mean, post, jnp.asarray(mean))
    if cov is not None:
        logdet = np.linalg.slogdet(np.asarray(cov))[1]
        post = eqx.tree_at(
            lambda p: (p.cov, p.logdet), post, (jnp.asarray(cov), jnp.asarray(logdet))
        )
    return post


# --------------------------------------------------------------------------- K = 1


def test_k1_elbo_equals_exact_magma_log_marginal_likelihood():
    # ALGORITHM.md §2.1/§8.4: for K = 1 the bound is tight. Task-specific and
    # output-specific hyperparameters, ragged tasks, NaN holes; no jitter anywhere.
    _, tasks, batch, params, vals = _setup(0, 1, shared_task_hps=False, shared_output_hps=False)
    post, tau = e_step(params, jnp.ones(1), jnp.ones((T, 1)), batch, 0.0)
    np.testing.assert_array_equal(np.asarray(tau), 1.0)
    value = float(elbo(params, jnp.ones(1), tau, post, batch, 0.0))
    exact = ref.magma_log_marginal(vals, tasks)
    np.testing.assert_allclose(value, exact, rtol=1e-9)
    # The hyperposterior is the exact posterior of mu_0 (direct precision form).
    mean, cov = ref.hyperposterior(vals, tasks, np.ones((T, 1)))
    np.testing.assert_allclose(np.asarray(post.mean), mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(post.cov), cov, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- K = 2


# The default layout and the most cluster-specific one (mean and task kernels).
@pytest.mark.parametrize(("cluster_specific", "shared_cluster_hps"), [(False, True), (True, False)])
def test_padded_clusters_leave_the_e_step_elbo_and_objective_of_the_real_ones(
    cluster_specific, shared_cluster_hps
):
    # Two real clusters run as four (core.clusters): the real clusters' hyperposteriors
    # and responsibilities are the numpy reference's, the padded ones get exactly zero
    # responsibility however badly the real ones fit, and every form of the ELBO and
    # the VM-step objective are those of the two clusters alone.
    rng, tasks, batch, params, vals = _setup(
        2,
        2,
        shared_task_hps=False,
        shared_cluster_hps=shared_cluster_hps,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )
    tau = rng.dirichlet(np.ones(2), size=T)
    weights = np.array([0.4, 0.6])
    padded, tau_p = pad_clusters(params, tau, 4)
    weights_p = jnp.asarray(np.r_[weights, 0.0, 0.0])
    assert np.asarray(padded.cluster_mask).tolist() == [True, True, False, False]
    full_e_step = jit(em.e_step)
    post, new_tau, nll = full_e_step(padded, weights_p, jnp.asarray(tau_p), batch, 0.0)
    mean, cov, expected_tau = _reference_e_step(vals, tasks, weights, tau)
    np.testing.assert_allclose(np.asarray(post.mean)[:2], mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(post.cov)[:2], cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(new_tau)[:, :2], expected_tau, rtol=1e-7, atol=1e-12)
    assert not np.asarray(new_tau)[:, 2:].any()
    far = jnp.asarray(nll).at[:, :2].add(1e4)  # every task far from both real clusters
    assert not np.asarray(memberships.responsibilities(weights_p, far, padded.cluster_mask))[
        :, 2:
    ].any()
    expected = ref.elbo(vals, tasks, weights, tau, mean, cov)
    tau_p = jnp.asarray(tau_p)
    np.testing.assert_allclose(
        float(elbo(padded, weights_p, tau_p, post, batch, 0.0)), expected, rtol=1e-9
    )
    _, _, nll_at_tau = full_e_step(padded, weights_p, tau_p, batch, 0.0, False)
    assert nll_at_tau is None  # the constant False skips the NLLs: compute them directly
    nll_at_tau = jit(em.cluster_task_nll)(padded, post, batch, 0.0)
    from_nll = jit(em.elbo_from_nll)(nll_at_tau, weights_p, tau_p, post, batch, padded)
    np.testing.assert_allclose(float(from_nll), expected, rtol=1e-9)
    objective = _m_objective(padded, tau_p, post, batch, 0.0)
    exact_post, _ = e_step(params, jnp.asarray(weights), jnp.asarray(tau), batch, 0.0)
    np.testing.assert_allclose(
        float(objective),
        float(_m_objective(params, jnp.asarray(tau), exact_post, batch, 0.0)),
        rtol=1e-10,
    )
    from_objective = jit(em.elbo_from_objective)(objective, weights_p, tau_p, post, batch, padded)
    np.testing.assert_allclose(float(from_objective), expected, rtol=1e-9)


@pytest.mark.parametrize("cluster_specific", [False, True])
def test_e_step_and_elbo_match_numpy_loops(cluster_specific):
    rng, tasks, batch, params, vals = _setup(
        1,
        2,
        shared_task_hps=False,
        shared_cluster_hps=False,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )
    tau = rng.dirichlet(np.ones(2), size=T)
    weights = np.array([0.3, 0.7])
    post, new_tau = e_step(params, jnp.asarray(weights), jnp.asarray(tau), batch, 0.0)
    mean, cov, expected_tau = _reference_e_step(vals, tasks, weights, tau)
    np.testing.assert_allclose(np.asarray(post.mean), mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(post.cov), cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(new_tau), expected_tau, rtol=1e-7, atol=1e-12)
    for t in (tau, expected_tau):
        got = float(elbo(params, jnp.asarray(weights), jnp.asarray(t), post, batch, 0.0))
        np.testing.assert_allclose(got, ref.elbo(vals, tasks, weights, t, mean, cov), rtol=1e-9)


def test_permuting_tasks_and_clusters_permutes_the_e_step_and_keeps_the_elbo():
    # ALGORITHM.md §8.11, with every hyperparameter axis specific (T*, K*, O* all full).
    flags = dict(
        shared_task_hps=False,
        shared_cluster_hps=False,
        cluster_specific_task_hps=True,
        shared_output_hps=False,
    )
    rng, tasks, batch, params, vals = _setup(6, 2, **flags)
    layout = SharingLayout.from_flags(T, 2, NOUT, **flags)
    tau = rng.dirichlet(np.ones(2), size=T)
    weights = np.array([0.3, 0.7])

    def run(tasks_, vals_, tau_, weights_):
        prm = ref.params_from_values(layout, vals_)
        b = ref.to_batch(tasks_)
        post, new_tau = e_step(prm, jnp.asarray(weights_), jnp.asarray(tau_), b, 0.0)
        value = float(elbo(prm, jnp.asarray(weights_), new_tau, post, b, 0.0))
        return np.asarray(post.mean), np.asarray(post.cov), np.asarray(new_tau), value

    mean, cov, new_tau, value = run(tasks, vals, tau, weights)
    tp = rng.permutation(T)
    tasks_p = ref.Tasks(
        x=tasks.x[tp],
        y=tasks.y[tp],
        mask=tasks.mask[tp],
        row=tasks.row[tp],
        mappings=tasks.mappings[tp],
        grid=tasks.grid,
    )
    vals_p = ref.NpParams(
        vals.mean_var, vals.mean_ls, vals.prior, vals.task_var[tp], vals.task_ls[tp], vals.noise[tp]
    )
    mean_t, cov_t, tau_t, value_t = run(tasks_p, vals_p, tau[tp], weights)
    np.testing.assert_allclose(mean_t, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov_t, cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tau_t, new_tau[tp], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(value_t, value, rtol=1e-11)
    cp = np.array([1, 0])
    vals_c = ref.NpParams(
        vals.mean_var[cp],
        vals.mean_ls[cp],
        vals.prior[cp],
        vals.task_var[:, cp],
        vals.task_ls[:, cp],
        vals.noise[:, cp],
    )
    mean_c, cov_c, tau_c, value_c = run(tasks, vals_c, tau[:, cp], weights[cp])
    np.testing.assert_allclose(mean_c, mean[cp], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov_c, cov[cp], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tau_c, new_tau[:, cp], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(value_c, value, rtol=1e-11)


def test_shared_hyperparameters_equal_their_explicit_replication():
    # ALGORITHM.md §8.13: size-1 (shared) axes everywhere == the fully specific layout holding
    # the same values on every axis, for the E-step, the ELBO and the VM-step objective.
    specific = dict(
        shared_task_hps=False,
        shared_cluster_hps=False,
        cluster_specific_task_hps=True,
        shared_output_hps=False,
    )
    rng, tasks, batch, _, _ = _setup(7, 2, **specific)
    shared_layout = SharingLayout.from_flags(T, 2, NOUT)
    params_s, vals_s = ref.random_params(rng, shared_layout)
    specific_layout = SharingLayout.from_flags(T, 2, NOUT, **specific)

    def rep(a, shape):
        return np.broadcast_to(a, shape).copy()

    vals_r = ref.NpParams(
        rep(vals_s.mean_var, specific_layout.mean),
        rep(vals_s.mean_ls, specific_layout.mean),
        rep(vals_s.prior, specific_layout.prior),
        rep(vals_s.task_var, specific_layout.task),
        rep(vals_s.task_ls, specific_layout.task),
        rep(vals_s.noise, specific_layout.task),
    )
    params_r = ref.params_from_values(specific_layout, vals_r)
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    weights = jnp.asarray([0.3, 0.7])
    out = []
    for prm in (params_s, params_r):
        post, new_tau = e_step(prm, weights, tau, batch, 0.0)
        value = float(elbo(prm, weights, new_tau, post, batch, 0.0))
        objective = float(_m_objective(prm, new_tau, post, batch, 1e-6))
        out.append(
            (np.asarray(post.mean), np.asarray(post.cov), np.asarray(new_tau), value, objective)
        )
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_coordinate_ascent_with_fixed_hyperparameters():
    # ALGORITHM.md §8.7: q(mu) update, tau update and pi update are exact maximisers.
    # Cluster-specific task covariances: the most general E-step.
    rng, _, batch, params, _ = _setup(
        2, 2, shared_task_hps=False, cluster_specific_task_hps=True, shared_output_hps=False
    )
    jitter = 1e-6
    tau0 = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    w0 = jnp.asarray([0.4, 0.6])

    def value(post, tau, weights=w0):
        return float(elbo(params, weights, tau, post, batch, jitter))

    post0, tau1 = e_step(params, w0, tau0, batch, jitter)
    best = value(post0, tau0)
    # (1) q(mu) is the maximiser given tau0: other hyperposteriors are worse.
    other, _ = e_step(params, w0, jnp.asarray(rng.dirichlet(np.ones(2), size=T)), batch, jitter)
    assert value(other, tau0) < best
    mean0, cov0 = np.asarray(post0.mean), np.asarray(post0.cov)
    for _ in range(3):
        assert (
            value(_with_post(post0, mean=mean0 + 0.05 * rng.standard_normal(mean0.shape)), tau0)
            < best
        )
        a = 0.1 * rng.standard_normal(cov0.shape)
        bigger = cov0 + a @ np.swapaxes(a, -1, -2)
        assert value(_with_post(post0, cov=bigger), tau0) < best
        shrink = 0.9 * cov0
        assert value(_with_post(post0, cov=shrink), tau0) < best
    # (2) the tau update cannot decrease the ELBO and beats other memberships.
    after_tau = value(post0, tau1)
    assert after_tau >= best - 1e-10 * abs(best)
    for _ in range(3):
        assert value(post0, jnp.asarray(rng.dirichlet(np.ones(2), size=T))) < after_tau
    # (3) pi = mean(tau) maximises sum tau log pi.
    w1 = mstep.mixture_weights(tau1, batch.task_weight)
    assert value(post0, tau1, w1) >= after_tau - 1e-10 * abs(after_tau)
    assert value(post0, tau1, jnp.asarray([0.5, 0.5])) <= value(post0, tau1, w1)
    # (4) the next q(mu) update with the new tau cannot decrease it either.
    post1, _ = e_step(params, w1, tau1, batch, jitter, False)
    assert value(post1, tau1, w1) >= value(post0, tau1, w1) - 1e-10 * abs(best)


@pytest.mark.parametrize("cluster_specific", [False, True])
def test_m_step_objective_is_minus_elbo_up_to_a_constant(cluster_specific):
    # At fixed q, ELBO(Theta) + J(Theta) must not depend on Theta (ALGORITHM.md §2.3):
    # otherwise the VM-step optimises something else than the bound.
    rng, _, batch, params, _ = _setup(
        3,
        2,
        shared_task_hps=False,
        shared_cluster_hps=False,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )
    layout = SharingLayout.from_flags(
        T,
        2,
        NOUT,
        shared_task_hps=False,
        shared_cluster_hps=False,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )
    other, _ = ref.random_params(rng, layout)
    jitter = 1e-6
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    weights = jnp.mean(tau, axis=0)
    post, _ = e_step(params, weights, tau, batch, jitter, False)
    sums = []
    for p in (params, other):
        sums.append(
            float(elbo(p, weights, tau, post, batch, jitter))
            + float(_m_objective(p, tau, post, batch, jitter))
        )
    np.testing.assert_allclose(sums[0], sums[1], rtol=1e-10)
    # The two parameter sets give really different objectives (the test can fail).
    assert (
        abs(
            float(_m_objective(params, tau, post, batch, jitter))
            - float(_m_objective(other, tau, post, batch, jitter))
        )
        > 1.0
    )


@pytest.mark.parametrize(
    "shared_cluster, shared_output", [(True, True), (False, False), (True, False), (False, True)]
)
def test_cluster_objective_equals_its_explicit_second_moments(shared_cluster, shared_output):
    # The factored form (posterior factor + residual columns grouped by distinct prior
    # covariance) against 0.5 sum [n log|C| + tr(C^-1 sum (C_hat + r r^T)) + n G log 2pi]
    # with numpy, on a grid with padded points.
    from mimosa_sklearn.core.params import prior_on_grid

    flags = dict(shared_cluster_hps=shared_cluster, shared_output_hps=shared_output)
    rng, tasks, _, params, _ = _setup(9, 3, **flags)
    batch = ref.to_batch(tasks, grid_pad=3)
    tau = jnp.asarray(rng.dirichlet(np.ones(3), size=T))
    post, _ = e_step(params, jnp.mean(tau, axis=0), tau, batch, 1e-6, False)
    got = float(jit(mstep.cluster_objective)(params, post, batch.grid, batch.grid_mask, 1e-6))
    cov, mean, _ = (np.asarray(a) for a in prior_on_grid(params, batch.grid, batch.grid_mask, 1e-6))
    pm, pc = np.asarray(post.mean), np.asarray(post.cov)
    k, o, g = pm.shape
    want = 0.0
    for kk in range(k):
        for oo in range(o):
            c = cov[kk % cov.shape[0], oo % cov.shape[1]]
            r = pm[kk, oo] - mean[kk % mean.shape[0], oo % mean.shape[1]]
            mom = pc[kk, oo] + np.outer(r, r)
            want += 0.5 * (
                np.linalg.slogdet(c)[1] + np.trace(np.linalg.solve(c, mom)) + g * np.log(2 * np.pi)
            )
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_posterior_factor_survives_a_singular_sum():
    # Rank-deficient hyperposterior covariances (positive semi-definite sums): the first
    # factorisation fails and the 1e-12 relative jitter takes over, still reproducing the
    # sum; a positive definite sum is factorised as it is.
    rng, _, batch, params, _ = _setup(10, 2)
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    post, _ = e_step(params, jnp.mean(tau, axis=0), tau, batch, 1e-6, False)
    g = post.cov.shape[-1]
    low = rng.standard_normal((2, NOUT, g, 1))  # four rank-1 terms, G = 8
    singular = _with_post(post, cov=low @ np.swapaxes(low, -1, -2))
    factor = np.asarray(jit(mstep.posterior_factor)(singular, 1, 1))
    summed = np.asarray(singular.cov).sum(axis=(0, 1))
    assert np.linalg.matrix_rank(summed) == 4
    assert np.isnan(np.asarray(jnp.linalg.cholesky(jnp.asarray(summed)))).any()
    assert np.all(np.isfinite(factor))
    np.testing.assert_allclose(factor[0, 0] @ factor[0, 0].T, summed, atol=1e-9 * summed.max())
    regular = np.asarray(jit(mstep.posterior_factor)(post, 2, NOUT))
    np.testing.assert_allclose(
        regular, np.linalg.cholesky(np.asarray(post.cov)), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(
    "shared_cluster, shared_output", [(True, True), (False, False), (True, False)]
)
def test_prior_mean_step_is_the_closed_form_optimum(shared_cluster, shared_output):
    # Constant prior means: c_ko = 1^T C^-1 mu_ko / 1^T C^-1 1 over the real grid points
    # (padded ones hold the mean 0 whatever c is), for every sharing of the prior.
    flags = dict(shared_cluster_hps=shared_cluster, shared_output_hps=shared_output)
    rng, tasks, _, params, vals = _setup(8, 3, **flags)
    batch = ref.to_batch(tasks, grid_pad=2)
    tau = jnp.asarray(rng.dirichlet(np.ones(3), size=T))
    post, _ = e_step(params, jnp.mean(tau, axis=0), tau, batch, 0.0, False)
    g = GRID.shape[0]
    mean = rng.normal(size=post.mean.shape)  # any q(mu) will do
    post = _with_post(post, mean=mean)
    step = jit(mstep.prior_mean_step)
    new = step(params, post, batch.grid, batch.grid_mask, 0.0)
    num, den = np.zeros((3, NOUT)), np.zeros((3, NOUT))
    for k in range(3):
        for o in range(NOUT):
            prec, one = np.linalg.inv(vals.mean_cov(k, o, GRID, GRID)), np.ones(g)
            num[k, o], den[k, o] = one @ prec @ mean[k, o, :g], one @ prec @ one
    if np.shape(params.prior_mean.constant)[1] == 1:  # one constant for all outputs
        num, den = num.sum(1, keepdims=True), den.sum(1, keepdims=True)
    expected = np.broadcast_to(num / den, (3, NOUT))
    got = np.broadcast_to(np.asarray(new.prior_mean.constant), (3, NOUT))
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    # Only the prior means moved, and the M-step objective's gradient in them vanishes.
    np.testing.assert_array_equal(np.asarray(new.log_noise), np.asarray(params.log_noise))
    old = np.broadcast_to(np.asarray(params.prior_mean.constant), (3, NOUT))
    assert np.min(np.abs(old - got)) > 1e-3

    def objective(c):
        moved = eqx.tree_at(lambda p: p.prior_mean.constant, new, c)
        return _m_objective(moved, tau, post, batch, 0.0)

    grad = jax.grad(objective)(new.prior_mean.constant)
    assert np.max(np.abs(np.asarray(grad))) < 1e-8


def test_m_step_reaches_the_optimum_of_the_whole_objective():
    # The VM-step runs L-BFGS separately on the mean-process and the task parameters:
    # the objective is separable, so together they must reach the joint optimum that
    # scipy's L-BFGS-B finds on the whole objective (a run that left either group
    # short of its optimum would leave a gradient and a higher value).
    from jax.flatten_util import ravel_pytree
    from scipy.optimize import minimize

    rng, _, batch, params, _ = _setup(
        9, 2, shared_task_hps=False, shared_cluster_hps=False, shared_output_hps=False
    )
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    jitter = 1e-6
    post, _ = e_step(params, jnp.mean(tau, axis=0), tau, batch, jitter, False)
    new, _, steps, value = jit(mstep.m_step)(params, tau, post, batch, jitter, 500, 1e-10)
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(dyn)

    @jit
    def f(v):
        return _m_objective(eqx.combine(unravel(v), static), tau, post, batch, jitter)

    grad = jit(jax.grad(f))
    with jax.enable_x64(True):
        ref_opt = minimize(
            lambda v: float(f(jnp.asarray(v))),
            np.asarray(flat),
            jac=lambda v: np.asarray(grad(jnp.asarray(v))),
            method="L-BFGS-B",
            options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15},
        )
        ours = float(_m_objective(new, tau, post, batch, jitter))
        got_grad = np.asarray(grad(ravel_pytree(eqx.filter(new, eqx.is_inexact_array))[0]))
        start_grad = np.asarray(grad(flat))
    assert 0 < int(steps) < 500
    np.testing.assert_allclose(float(value), ours, rtol=1e-12)
    np.testing.assert_allclose(ours, ref_opt.fun, rtol=1e-9)
    # Every parameter, of both groups, at a stationary point.
    assert np.max(np.abs(got_grad)) < 1e-4 * np.max(np.abs(start_grad))


@pytest.mark.parametrize("cluster_specific", [False, True])
def test_em_iteration_elbo_from_the_objective_equals_the_direct_elbo(cluster_specific):
    # em_iteration derives the ELBO from the VM-step objective instead of recomputing
    # it: the two must agree with all constants, not just up to one.
    rng, _, batch, params, _ = _setup(
        5,
        2,
        shared_task_hps=False,
        shared_cluster_hps=False,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    weights = jnp.mean(tau, axis=0)
    jitter = jnp.asarray(1e-6)
    new, w, tau1, post, value, steps, finite = em.em_iteration(
        params, weights, tau, batch, jitter, jnp.asarray(True), 10, 1e-5
    )
    direct = float(elbo(new, w, tau1, post, batch, jitter))
    assert int(steps) > 0 and bool(finite)
    np.testing.assert_allclose(float(value), direct, rtol=1e-10)


def test_em_iteration_without_the_vm_step_is_an_e_step_and_the_elbo():
    # run_em's final E-steps reuse em_iteration with update_params=False: the
    # hyperparameters and weights must come back untouched, q(mu) and tau must be the
    # plain VE-step's, and the value must be the ELBO at the unchanged parameters.
    rng, _, batch, params, _ = _setup(
        6, 2, shared_task_hps=False, shared_cluster_hps=False, shared_output_hps=False
    )
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=T))
    weights = jnp.asarray([0.3, 0.7])
    jitter = jnp.asarray(1e-6)
    new, w, tau1, post, value, steps, finite = em.em_iteration(
        params, weights, tau, batch, jitter, jnp.asarray(True), 10, 1e-5, jnp.asarray(False)
    )
    assert int(steps) == 0 and bool(finite)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(w), np.asarray(weights))
    post_ref, tau_ref = e_step(params, weights, tau, batch, jitter, True)
    np.testing.assert_allclose(np.asarray(post.mean), np.asarray(post_ref.mean), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(tau1), np.asarray(tau_ref), rtol=1e-10, atol=1e-14)
    direct = float(elbo(params, weights, tau1, post, batch, jitter))
    np.testing.assert_allclose(float(value), direct, rtol=1e-10)
    # With the VM-step on, the same call moves the parameters (the flag is not ignored).
    moved = em.em_iteration(
        params, weights, tau, batch, jitter, jnp.asarray(True), 10, 1e-5, jnp.asarray(True)
    )
    assert int(moved[5]) > 0
    assert not np.allclose(np.asarray(moved[0].log_noise), np.asarray(params.log_noise))


# --------------------------------------------------------------------------- run_em


def test_run_em_elbo_is_non_decreasing():
    rng = np.random.default_rng(4)
    t = 8
    offsets = np.where(np.arange(t) % 2 == 0, -2.0, 2.0) + 0.1 * rng.standard_normal(t)
    tasks = ref.make_tasks(rng, t, N, GRID, 3, N, n_outputs=1, hole_prob=0.0, offsets=offsets)
    layout = SharingLayout.from_flags(t, 2, 1)
    params, _ = ref.random_params(rng, layout)
    # Soft start leaning towards the truth (as k-means would give), far from converged.
    tau0 = np.where((np.arange(t) % 2 == 0)[:, None], [0.7, 0.3], [0.3, 0.7])
    result = em.run_em(
        params, jnp.asarray(tau0), ref.to_batch(tasks), max_iter=6, tol=0.0, max_steps=20
    )
    hist = result.elbo_history
    assert result.n_iter == 6 and hist.shape == (6,) and np.all(np.isfinite(hist))
    assert np.all(np.diff(hist) >= -1e-6 * np.abs(hist[1:])), hist
    assert hist[-1] > hist[0]  # it actually learned something
    # The final E-step (tau, then q(mu)) is coordinate ascent too.
    assert result.elbo >= hist[-1] - 1e-6 * abs(hist[-1])
    # ... and leaves q(mu) consistent with the final tau and hyperparameters.
    batch, jitter = ref.to_batch(tasks), jnp.asarray(result.jitter)
    weights, tau = jnp.asarray(result.weights), jnp.asarray(result.tau)
    post_ref, _ = e_step(result.params, weights, tau, batch, jitter, False)
    np.testing.assert_allclose(
        np.asarray(result.post.mean), np.asarray(post_ref.mean), rtol=1e-9, atol=1e-12
    )
    direct = float(elbo(result.params, weights, tau, result.post, batch, jitter))
    np.testing.assert_allclose(result.elbo, direct, rtol=1e-10)
    # Well-separated offsets: the two groups end up in different clusters.
    labels = result.tau.argmax(1)
    assert len(set(labels[::2])) == 1 and len(set(labels[1::2])) == 1
    assert labels[0] != labels[1]


def test_run_em_does_not_stop_while_the_m_step_is_capped():
    """A small ELBO change is not convergence when L-BFGS used its whole step budget
    (slow progress, not a stationary point); it is when L-BFGS met its tolerance."""
    rng = np.random.default_rng(6)
    t = 6
    tasks = ref.make_tasks(rng, t, N, GRID, 3, N, n_outputs=1, hole_prob=0.0)
    layout = SharingLayout.from_flags(t, 2, 1)
    params, _ = ref.random_params(rng, layout)
    tau0 = jnp.asarray(rng.dirichlet(np.ones(2), size=t))
    batch = ref.to_batch(tasks)
    # tol=1: every ELBO change counts as small.
    capped = em.run_em(params, tau0, batch, max_iter=4, tol=1.0, max_steps=1)
    assert capped.n_iter == 4 and not capped.converged
    free = em.run_em(params, tau0, batch, max_iter=4, tol=1.0, max_steps=200)
    assert free.n_iter == 2 and free.converged


# --------------------------------------------------------------------------- sharing variants


def _combo(shared_task, shared_cluster, cluster_specific, shared_output):
    marks = [pytest.mark.slow]
    return pytest.param(shared_task, shared_cluster, cluster_specific, shared_output, marks=marks)


COMBOS = [_combo(*flags) for flags in itertools.product([True, False], repeat=4)]


@pytest.mark.parametrize(
    ("shared_task", "shared_cluster", "cluster_specific", "shared_output"), COMBOS
)
def test_every_sharing_combination_fits_and_predicts(
    shared_task, shared_cluster, cluster_specific, shared_output
):
    # O = 2 outputs with NaN holes, ragged tasks, 6 real tasks bucketed to 8 (dummy tasks), a grid
    # of 12 points bucketed to 16 (padded grid points).
    rng = np.random.default_rng(5)
    t = 6
    grid = np.linspace(0.0, 10.0, 12)[:, None]
    offsets = np.where(np.arange(t) < 3, -1.5, 1.5)
    tasks = ref.make_tasks(rng, t, 7, grid, 4, 7, n_outputs=2, hole_prob=0.2, offsets=offsets)
    config = _fit.FitConfig(
        n_clusters=2,
        shared_task_hps=shared_task,
        shared_cluster_hps=shared_cluster,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=shared_output,
        max_iter=2,
        max_steps=5,
        seed=0,
    )
    model = _fit.fit_magma(from_nan(tasks.nan_x(), tasks.nan_y(), tasks.mappings), grid, config)
    assert model.n_iter == 2 and np.all(np.isfinite(model.elbo_history))
    assert np.isfinite(model.elbo)
    np.testing.assert_allclose(model.tau.sum(1), 1.0, atol=1e-12)
    x_pred = from_nan(np.repeat(np.linspace(-1.0, 11.0, 5)[None, :, None], 2, axis=0))
    outs = [
        model.predict_training_tasks(np.array([0, 4]), x_pred),
        model.predict_new_tasks(None, x_pred),
    ]
    np.testing.assert_allclose(outs[1][2], np.broadcast_to(model.weights, (2, 2)), atol=1e-12)
    ctx = model.condition(from_nan(tasks.nan_x()[:2, :3], tasks.nan_y()[:2, :3]))
    assert np.all(np.isfinite(ctx.tau)) and ctx.tau.shape == (2, 2)
    outs.append(model.predict_new_tasks(ctx, x_pred))
    for mean, var, tau in outs:
        mean, var = mean[:, :5], var[:, :5]  # 5 rows in 8 slots
        assert mean.shape == (2, 5, 2) and var.shape == (2, 5, 2) and tau.shape == (2, 2)
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var > 0)
        np.testing.assert_allclose(tau.sum(1), 1.0, atol=1e-12)
