"""VM-step building blocks of :mod:`mimosa_sklearn.core.mstep` against closed forms.

``tests/core/test_em.py`` already checks ``m_step`` against scipy, ``cluster_objective``
for constant prior means and the constant prior-mean step. Proven here:

* ``mixture_weights`` is the mean responsibility over the real tasks only;
* ``posterior_factor`` factorises the hyperposterior covariances summed over exactly
  the axes that the prior covariances share;
* ``task_moments`` equals second moments built task by task with numpy loops (plain,
  chunked, per cluster) and their sum over real tasks on the shared-input fast path;
* ``task_objective`` of those moments is minus the responsibility-weighted expected
  log-likelihood of every task (``core_reference.expected_loglik``), with the jitter
  relative to the mean diagonal of each task covariance;
* ``part_moments`` gives every part of a batch in parts its own tasks (and its own fast
  path), and on the approximate grid subtracts the prior-mean offsets;
* ``prior_mean_step`` reaches the generalised least-squares optimum of an affine prior
  mean and refuses a Newton step that would raise its objective;
  ``cluster_objective`` holds for an input-dependent prior mean and its jitter.
* a prior mean without parameters (``kernax.ZeroMean``) leaves ``prior_mean_step``
  nothing to do.
"""

from __future__ import annotations

import dataclasses

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import mstep, runtime
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.hyperposterior import Hyperposterior
from mimosa_sklearn.core.params import TaskBatch, stack_module

T, N, NOUT, K = 4, 5, 2, 2
GRID = np.linspace(0.0, 5.0, 6)[:, None]
G = GRID.shape[0]

# Compiled once per shape: eager dispatch of the vmapped code costs more.
task_moments = jit(mstep.task_moments)
task_objective = jit(mstep.task_objective)
part_moments = jit(mstep.part_moments)
prior_mean_step = jit(mstep.prior_mean_step)
cluster_objective = jit(mstep.cluster_objective)
posterior_factor = jit(mstep.posterior_factor)


# --------------------------------------------------------------------------- helpers


def _post(mean: np.ndarray, cov: np.ndarray) -> Hyperposterior:
    """A hyperposterior holding ``mean`` and ``cov``; the VM-step reads nothing else."""
    zeros = jnp.zeros_like(jnp.asarray(cov))
    return Hyperposterior(
        mean=jnp.asarray(mean),
        cov=jnp.asarray(cov),
        prior_mean=jnp.zeros_like(jnp.asarray(mean)),
        prior_chol=zeros,
        whitened_chol=zeros,
        logdet=jnp.zeros(mean.shape[:2]),
    )


def _random_post(rng, k: int = K, o: int = NOUT, g: int = G) -> tuple[np.ndarray, np.ndarray]:
    mean = rng.normal(size=(k, o, g))
    cov = np.stack([[ref.spd(rng, g, 0.3) for _ in range(o)] for _ in range(k)])
    return mean, cov


def _one_hot(mappings: np.ndarray, g: int) -> np.ndarray:
    """Dense selection ``P_i`` of every task, ``(T, N, G)``, zero rows on padding."""
    return np.eye(g + 1)[mappings][..., :g]


def _np_moments(y, mask, proj, task_mean, chat, tau, kt):
    """``S_iko = tau_ik [A_i C_ko A_i^T + r r^T]`` on the rows observed for output ``o``
    (zero elsewhere), ``r = y_io - task_mean_iko``; summed over ``k`` when ``kt = 1``."""
    t, n, o_n = y.shape
    out = np.zeros((t, tau.shape[1], o_n, n, n))
    for i in range(t):
        for k in range(tau.shape[1]):
            for o in range(o_n):
                obs = mask[i, :, o]
                a = proj[i][obs]
                r = y[i, obs, o] - task_mean[i, k, o, obs]
                out[i, k, o][np.ix_(obs, obs)] = tau[i, k] * (a @ chat[k, o] @ a.T + np.outer(r, r))
    return out.sum(1, keepdims=True) if kt == 1 else out


def _exact_moments(tasks: ref.Tasks, mean, cov, tau, kt):
    proj = _one_hot(tasks.mappings, G)
    return _np_moments(
        tasks.y, tasks.mask, proj, np.einsum("tng,kog->tkon", proj, mean), cov, tau, kt
    )


def _subset(tasks: ref.Tasks, rows) -> ref.Tasks:
    return ref.Tasks(
        x=tasks.x[rows],
        y=tasks.y[rows],
        mask=tasks.mask[rows],
        row=tasks.row[rows],
        mappings=tasks.mappings[rows],
        grid=tasks.grid,
    )


def _shared_tasks(rng, n_real: int, n: int) -> tuple[ref.Tasks, TaskBatch]:
    """``n_real`` tasks on one set of inputs and holes (different outputs), plus one
    padded task (no observation, task weight 0) as the fit's bucketing adds."""
    one = ref.make_tasks(rng, 1, n, GRID, 3, n - 1, n_outputs=NOUT, hole_prob=0.3)
    t = n_real + 1
    rep = lambda a: np.repeat(a, t, axis=0)  # noqa: E731
    real = np.arange(t) < n_real
    mask = rep(one.mask) & real[:, None, None]
    y = np.where(mask, rep(one.y) + rng.normal(size=(t, 1, NOUT)), 0.0)
    mappings = np.where(real[:, None], rep(one.mappings), G)
    tasks = ref.Tasks(rep(one.x), y, mask, rep(one.row) & real[:, None], mappings, GRID)
    batch = ref.to_batch(tasks, task_weight=real.astype(np.float64))
    return tasks, dataclasses.replace(batch, shared_inputs=True)


def _minus_expected_loglik(vals, tasks, mean, cov, tau) -> float:
    return -float(np.sum(tau * ref.expected_loglik(vals, tasks, mean, cov)))


@pytest.fixture(scope="module")
def problem():
    """Ragged tasks with holes, a random hyperposterior and random memberships."""
    rng = np.random.default_rng(0)
    tasks = ref.make_tasks(rng, T, N, GRID, 2, N, n_outputs=NOUT, hole_prob=0.3)
    mean, cov = _random_post(rng)
    tau = rng.dirichlet(np.ones(K), size=T)
    return tasks, mean, cov, tau


# --------------------------------------------------------------------------- weights, factor


def test_mixture_weights_average_memberships_over_real_tasks_only():
    tau = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.9, 0.1], [0.5, 0.5]])
    weight = np.array([1.0, 1.0, 1.0, 0.0, 0.0])  # two padded tasks
    got = mstep.mixture_weights(tau, weight)
    # numpy in, numpy out: nothing compiled on the host path.
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, [0.6, 0.4], rtol=1e-15)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-15)
    jitted = jax.jit(mstep.mixture_weights)(jnp.asarray(tau), jnp.asarray(weight))
    np.testing.assert_allclose(np.asarray(jitted), [0.6, 0.4], rtol=1e-15)


@pytest.mark.parametrize(("kc", "oc"), [(K, 1), (1, NOUT)])
def test_posterior_factor_sums_over_the_shared_axis_only(kc, oc):
    rng = np.random.default_rng(1)
    mean, cov = _random_post(rng)
    factor = np.asarray(posterior_factor(_post(mean, cov), kc, oc))
    summed = cov.sum(axis=(0 if kc == 1 else 1), keepdims=True)
    assert factor.shape == (kc, oc, G, G)
    np.testing.assert_allclose(factor @ np.swapaxes(factor, -1, -2), summed, rtol=1e-12)
    np.testing.assert_array_equal(np.triu(factor, 1), 0.0)


# --------------------------------------------------------------------------- task moments


@pytest.mark.parametrize(("kt", "chunk"), [(1, 0), (K, 2)])
def test_task_moments_equal_per_task_loops(problem, kt, chunk):
    tasks, mean, cov, tau = problem
    batch = dataclasses.replace(ref.to_batch(tasks), task_chunk=chunk)
    mom, weights = task_moments(batch, jnp.asarray(tau), _post(mean, cov), kt)
    np.testing.assert_allclose(
        np.asarray(mom), _exact_moments(tasks, mean, cov, tau, kt), rtol=1e-12, atol=1e-12
    )
    # Kt = 1: the moments already carry tau (rows sum to 1); Kt = K: tau weights the logdets.
    np.testing.assert_array_equal(np.asarray(weights), tau if kt == K else np.ones((T, 1)))


def _task_layout(shared_task: bool, cluster_specific: bool) -> SharingLayout:
    """``T`` tasks, ``K`` clusters, ``NOUT`` outputs with output-specific hyperparameters."""
    return SharingLayout.from_flags(
        T,
        K,
        NOUT,
        shared_task_hps=shared_task,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )


@pytest.mark.parametrize(
    ("shared_task", "cluster_specific", "chunk", "jitter"),
    [(True, False, 0, 0.0), (False, True, 2, 0.0), (False, False, 0, 1e-2)],
)
def test_task_objective_is_minus_the_expected_log_likelihood(
    problem, shared_task, cluster_specific, chunk, jitter
):
    # J^f = -sum_ik tau_ik E_q[log N(y_i; mu_k(t_i), Psi_ik)] for any q(mu) and tau.
    tasks, mean, cov, tau = problem
    layout = _task_layout(shared_task, cluster_specific)
    params, vals = ref.random_params(np.random.default_rng(2), layout)
    batch = dataclasses.replace(ref.to_batch(tasks), task_chunk=chunk)
    kt = layout.task[1]
    mom, weights = task_moments(batch, jnp.asarray(tau), _post(mean, cov), kt)
    got = float(task_objective(params, batch, mom, weights, jitter))
    # The relative jitter adds jitter * max(mean diag, 1) = jitter * max(var + noise, 1)
    # to the diagonal of every (SE) task covariance: the same as that much more noise.
    noise = vals.noise + jitter * np.maximum(vals.task_var + vals.noise, 1.0)
    vals = ref.NpParams(vals.mean_var, vals.mean_ls, vals.prior, vals.task_var, vals.task_ls, noise)
    np.testing.assert_allclose(got, _minus_expected_loglik(vals, tasks, mean, cov, tau), rtol=1e-10)


@pytest.mark.parametrize(
    ("shared_task", "cluster_specific", "chunk", "offsets"),
    [
        (True, False, 2, True),
        (False, True, 2, False),
        (False, False, 1, True),
    ],
)
def test_streamed_task_objective_equals_the_objective_of_stored_moments(
    problem, shared_task, cluster_specific, chunk, offsets
):
    # Same value and same gradient in every hyperparameter (task-specific ones included,
    # whose gradients come back per task from the chunks), with or without offsets.
    tasks, mean, cov, tau = problem
    layout = _task_layout(shared_task, cluster_specific)
    params, _ = ref.random_params(np.random.default_rng(4), layout)
    batch = dataclasses.replace(ref.to_batch(tasks), task_chunk=chunk)
    post, kt = _post(mean, cov), layout.task[1]
    off = None
    if offsets:
        off = jnp.asarray(np.random.default_rng(5).normal(size=(T, K, NOUT, N)))
    tau_j = jnp.asarray(tau)

    def stored(p):
        mom, w = mstep.task_moments(batch, tau_j, post, kt, offsets=off)
        return mstep.task_objective(p, batch, mom, w, 1e-3)

    def streamed(p):
        return mstep.streamed_task_objective(p, batch, tau_j, post, 1e-3, off)

    want, want_grad = jit(eqx.filter_value_and_grad(stored))(params)
    got, got_grad = jit(eqx.filter_value_and_grad(streamed))(params)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
    assert any(np.any(np.asarray(a) != 0.0) for a in jax.tree.leaves(got_grad))


@pytest.mark.parametrize(
    ("shared_task", "cluster_specific"), [(True, False), (False, True), (False, False)]
)
def test_task_objectives_on_a_task_axis_split_in_shards_are_unchanged(
    problem, shared_task, cluster_specific
):
    # task_shards = 2 (two devices' blocks, summed separately and added once): the stored
    # and the streamed objectives keep the value and gradient of the unsplit stored one.
    tasks, mean, cov, tau = problem
    layout = _task_layout(shared_task, cluster_specific)
    params, _ = ref.random_params(np.random.default_rng(6), layout)
    whole = dataclasses.replace(ref.to_batch(tasks), task_chunk=2)
    split = dataclasses.replace(whole, task_shards=2)
    post, kt, tau_j = _post(mean, cov), layout.task[1], jnp.asarray(tau)

    def stored(p, batch):
        mom, w = mstep.task_moments(batch, tau_j, post, kt)
        return mstep.task_objective(p, batch, mom, w, 1e-3)

    def streamed(p, batch):
        return mstep.streamed_task_objective(p, batch, tau_j, post, 1e-3)

    def value_and_grad(f, batch):
        return jit(eqx.filter_value_and_grad(lambda p: f(p, batch)))(params)

    want, want_grad = value_and_grad(stored, whole)
    for f in (stored, streamed):
        got, got_grad = value_and_grad(f, split)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
        for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kt", [1, K])
def test_shared_input_moments_are_sums_over_real_tasks(kt):
    rng = np.random.default_rng(3)
    tasks, batch = _shared_tasks(rng, 3, N)
    mean, cov = _random_post(rng)
    tau = rng.dirichlet(np.ones(K), size=4)
    tau[-1] = [0.9, 0.1]  # the padded task's memberships must not count
    mom, weights = task_moments(batch, jnp.asarray(tau), _post(mean, cov), kt, True)
    real = _subset(tasks, slice(0, 3))
    expected = _exact_moments(real, mean, cov, tau[:3], kt).sum(0, keepdims=True)
    np.testing.assert_allclose(np.asarray(mom), expected, rtol=1e-12, atol=1e-12)
    want_w = tau[:3].sum(0, keepdims=True) if kt == K else np.array([[3.0]])
    np.testing.assert_allclose(np.asarray(weights), want_w, rtol=1e-14)
    # One covariance (task 0's) serves every real task; the padded task adds nothing.
    layout = SharingLayout.from_flags(4, K, NOUT, cluster_specific_task_hps=kt == K)
    params, vals = ref.random_params(rng, layout)
    got = float(task_objective(params, batch, mom, weights, 0.0))
    want = _minus_expected_loglik(vals, real, mean, cov, tau[:3])
    np.testing.assert_allclose(got, want, rtol=1e-10)


# --------------------------------------------------------------------------- part moments


def test_part_moments_give_each_part_its_own_tasks_and_fast_path(problem):
    tasks, mean, cov, tau_a = problem
    rng = np.random.default_rng(4)
    shared, part_b = _shared_tasks(rng, 2, 4)  # shorter tasks: a batch in parts
    tau_b = rng.dirichlet(np.ones(K), size=3)
    tau = np.concatenate([tau_a, tau_b])
    layout = SharingLayout.from_flags(T + 3, K, NOUT, cluster_specific_task_hps=True)
    params, vals = ref.random_params(rng, layout)
    post = _post(mean, cov)
    parts = (ref.to_batch(tasks), part_b)
    moments, weights = part_moments(params, jnp.asarray(tau), post, parts)
    assert len(moments) == len(weights) == 2
    np.testing.assert_allclose(
        np.asarray(moments[0]), _exact_moments(tasks, mean, cov, tau_a, K), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_array_equal(np.asarray(weights[0]), tau_a)
    # The second part takes the shared-input fast path (T* = 1): its moments are summed.
    real_b = _subset(shared, slice(0, 2))
    want_b = _exact_moments(real_b, mean, cov, tau_b[:2], K).sum(0, keepdims=True)
    np.testing.assert_allclose(np.asarray(moments[1]), want_b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(weights[1]), tau_b[:2].sum(0, keepdims=True))
    # Together: the expected log-likelihood of all real tasks of both parts.
    total = sum(
        float(task_objective(params, b, m, w, 0.0))
        for b, m, w in zip(parts, moments, weights, strict=True)
    )
    want = _minus_expected_loglik(vals, tasks, mean, cov, tau_a)
    want += _minus_expected_loglik(vals, real_b, mean, cov, tau_b[:2])
    np.testing.assert_allclose(total, want, rtol=1e-10)
    # A lone TaskBatch is the one-part case.
    lone_m, lone_w = part_moments(params, jnp.asarray(tau_a), post, parts[0])
    assert len(lone_m) == 1
    np.testing.assert_allclose(np.asarray(lone_m[0]), np.asarray(moments[0]), rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(lone_w[0]), np.asarray(weights[0]))


@pytest.mark.parametrize("shared", [False, True])
def test_part_moments_on_the_approximate_grid_subtract_the_prior_offsets(problem, shared):
    # mu_k(t_i) = m_k(t_i) + A_i (mu_hat_k - m_k(u)) with an affine m_k: the offsets
    # m_k(t_i) - A_i m_k(u) do not vanish and must enter the residuals, on the general
    # path and on the shared-input fast path (real tasks share A_0, moments summed).
    _, mean, cov, _ = problem
    rng = np.random.default_rng(5)
    if shared:
        tasks, batch = _shared_tasks(rng, 3, N)
        proj = np.repeat(rng.normal(size=(1, N, G)), T, axis=0) * tasks.row[..., None]
    else:
        tasks, batch = problem[0], ref.to_batch(problem[0])
        proj = rng.normal(size=(T, N, G)) * tasks.row[..., None]
    batch = eqx.tree_at(lambda b: b.mappings, batch, jnp.asarray(proj))
    tau = rng.dirichlet(np.ones(K), size=T)
    layout = SharingLayout.from_flags(T, K, NOUT)
    params, _ = ref.random_params(rng, layout)
    slope, intercept = rng.normal(size=(K, 1)), rng.normal(size=(K, 1))
    prior = stack_module(kernax.AffineMean(0.0, 0.0), layout.prior)
    prior = eqx.tree_at(lambda m: (m.slope, m.intercept), prior, (slope, intercept))
    params = eqx.tree_at(lambda p: p.prior_mean, params, prior)
    (mom,), (weights,) = part_moments(params, jnp.asarray(tau), _post(mean, cov), batch)
    m_t = slope[None, :, :, None] * tasks.x[:, None, None, :, 0] + intercept[None, :, :, None]
    m_u = slope[:, :, None] * GRID[:, 0] + intercept[:, :, None]
    task_mean = m_t + np.einsum("tng,kog->tkon", proj, mean - m_u)
    want = _np_moments(tasks.y, tasks.mask, proj, task_mean, cov, tau, 1)
    plain_mean = np.einsum("tng,kog->tkon", proj, mean)
    plain = _np_moments(tasks.y, tasks.mask, proj, plain_mean, cov, tau, 1)
    if shared:
        want, plain = want[:3].sum(0, keepdims=True), plain[:3].sum(0, keepdims=True)
    np.testing.assert_allclose(np.asarray(mom), want, rtol=1e-11, atol=1e-11)
    want_w = [[3.0]] if shared else np.ones((T, 1))
    np.testing.assert_array_equal(np.asarray(weights), want_w)
    # Without the offsets (the exact-grid formula) the moments would differ.
    assert np.max(np.abs(plain - want)) > 1e-2


# --------------------------------------------------------------------------- prior means


@pytest.fixture(scope="module")
def affine():
    """An affine prior mean per cluster and output, on a grid with two padded points."""
    with runtime.jax_scope():  # module fixtures run outside the per-test float64 context
        return _affine()


def _affine():
    rng = np.random.default_rng(6)
    tasks = ref.make_tasks(rng, T, N, GRID, 2, N, n_outputs=NOUT)
    batch = ref.to_batch(tasks, grid_pad=2)
    layout = SharingLayout.from_flags(T, K, NOUT, shared_cluster_hps=False, shared_output_hps=False)
    params, vals = ref.random_params(rng, layout)
    prior = stack_module(kernax.AffineMean(0.0, 0.0), layout.prior)
    slope, intercept = rng.normal(size=(K, NOUT)), rng.normal(size=(K, NOUT))
    prior = eqx.tree_at(lambda m: (m.slope, m.intercept), prior, (slope, intercept))
    params = eqx.tree_at(lambda p: p.prior_mean, params, prior)
    mean, cov = _random_post(rng, g=G + 2)
    return batch, params, vals, slope, intercept, mean, cov


def test_prior_mean_step_is_the_generalised_least_squares_fit(affine):
    # q(beta) = 0.5 sum_ko (mu_ko - X beta_ko)^T C_ko^-1 (mu_ko - X beta_ko), X = [x, 1]
    # on the real grid points: one Newton step lands on the GLS solution.
    batch, params, vals, slope, intercept, mean, cov = affine
    new = prior_mean_step(params, _post(mean, cov), batch.grid, batch.grid_mask, 0.0)
    design = np.c_[GRID[:, 0], np.ones(G)]
    for k in range(K):
        for o in range(NOUT):
            prec = np.linalg.inv(vals.mean_cov(k, o, GRID, GRID))
            beta = np.linalg.solve(design.T @ prec @ design, design.T @ prec @ mean[k, o, :G])
            got = [float(new.prior_mean.slope[k, o]), float(new.prior_mean.intercept[k, o])]
            np.testing.assert_allclose(got, beta, rtol=1e-8, atol=1e-10)
    assert np.min(np.abs(np.asarray(new.prior_mean.slope) - slope)) > 1e-3
    # Nothing else moves.
    for a, b in zip(
        jax.tree.leaves((new.mean_kernel, new.task_kernel, new.log_noise)),
        jax.tree.leaves((params.mean_kernel, params.task_kernel, params.log_noise)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cluster_objective_with_an_affine_prior_mean_and_jitter(affine):
    # Brute force: 0.5 sum_ko [log|C| + tr(C^-1 (C_hat + r r^T)) + G log 2pi], with C the
    # relatively jittered prior on real grid points and the identity on padded ones.
    batch, params, vals, slope, intercept, mean, cov = affine
    jitter = 1e-3
    post = _post(mean, cov)
    want = 0.0
    for k in range(K):
        for o in range(NOUT):
            c_real = vals.mean_cov(k, o, GRID, GRID)
            c_real += jitter * max(np.mean(np.diag(c_real)), 1.0) * np.eye(G)
            c = np.eye(G + 2)
            c[:G, :G] = c_real
            m = np.r_[slope[k, o] * GRID[:, 0] + intercept[k, o], 0.0, 0.0]
            r = mean[k, o] - m
            want += 0.5 * (
                np.linalg.slogdet(c)[1]
                + np.trace(np.linalg.solve(c, cov[k, o] + np.outer(r, r)))
                + (G + 2) * ref.LOG_2PI
            )
    got = float(cluster_objective(params, post, batch.grid, batch.grid_mask, jitter))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # A precomputed factor of the same hyperposterior gives the same value.
    factor = posterior_factor(post, K, NOUT)
    got_f = float(cluster_objective(params, post, batch.grid, batch.grid_mask, jitter, factor))
    np.testing.assert_allclose(got_f, want, rtol=1e-10)


def test_prior_mean_step_leaves_a_parameter_free_mean_alone(affine):
    batch, params, *_, mean, cov = affine
    params = eqx.tree_at(lambda p: p.prior_mean, params, kernax.ZeroMean())
    assert (
        mstep.prior_mean_step(params, _post(mean, cov), batch.grid, batch.grid_mask, 0.0) is params
    )


class _ExpConstant(eqx.Module):
    """The nonlinear mean ``m(x) = exp(a)``: the Newton step can overshoot."""

    log_c: jax.Array

    def __call__(self, x):
        return jnp.full((x.shape[0],), jnp.exp(self.log_c))


@pytest.mark.parametrize(("start", "accepted"), [(0.0, False), (np.log(8.0), True)])
def test_prior_mean_step_keeps_only_a_step_that_lowers_the_objective(start, accepted):
    # With mu_hat = 10 everywhere, q(a) = 0.5 w (exp(a) - 10)^2 + const. From exp(a) = 1
    # the Hessian is negative and Newton goes to exp(a) = exp(-9/8): q would rise, the
    # step is refused. From exp(a) = 8 Newton lands on log 8 + 1/3 (q falls): kept.
    layout = SharingLayout.from_flags(1, 1, 1)
    params, _ = ref.random_params(np.random.default_rng(7), layout)
    params = eqx.tree_at(lambda p: p.prior_mean, params, _ExpConstant(jnp.full((1, 1), start)))
    mean = np.full((1, 1, G), 10.0)
    cov = np.eye(G)[None, None]
    new = prior_mean_step(params, _post(mean, cov), jnp.asarray(GRID), jnp.ones(G, bool), 0.0)
    want = start + 1.0 / 3.0 if accepted else start
    np.testing.assert_allclose(float(new.prior_mean.log_c[0, 0]), want, rtol=1e-12, atol=1e-14)


def test_m_step_streams_the_moments_only_past_the_memory_bound(problem, monkeypatch):
    # Below STORED_MOMENTS_MAX the moments are formed once per VM-step (faster); past
    # it every evaluation forms them chunk by chunk. Both give the same VM-step.
    tasks, mean, cov, tau = problem
    layout = SharingLayout.from_flags(T, K, NOUT, shared_output_hps=False)
    params, _ = ref.random_params(np.random.default_rng(7), layout)
    batch = dataclasses.replace(ref.to_batch(tasks), task_chunk=2)
    post, tau_j = _post(mean, cov), jnp.asarray(tau)
    assert mstep._moments_fit_in_memory(batch, 1)

    def run():
        # A new function each time: the bound is read when the VM-step is traced.
        step = jit(lambda p: mstep.m_step(p, tau_j, post, batch, 1e-3, 10, 1e-3))
        return step(params)

    want = run()
    calls = []
    real = mstep.streamed_task_objective
    monkeypatch.setattr(mstep, "STORED_MOMENTS_MAX", 0)
    monkeypatch.setattr(
        mstep, "streamed_task_objective", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    assert not mstep._moments_fit_in_memory(batch, 1)
    got = run()
    assert calls  # the streamed objective was traced
    np.testing.assert_allclose(float(got[3]), float(want[3]), rtol=1e-9)
    for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want[0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
