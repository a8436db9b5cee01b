"""Predictive distributions (ALGORITHM.md §4, §8.5, §8.9, §8.10)."""

from __future__ import annotations

import core_reference as ref
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from padded_tasks import from_nan
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as Const

from mimosa_sklearn import _fit, _fitted
from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em, mstep
from mimosa_sklearn.core import predict as pr
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.hyperposterior import Hyperposterior
from mimosa_sklearn.core.model import Model

e_step = jit(lambda *args: em.e_step(*args)[:2])
extend = jit(pr.extend_hyperposterior)
predict_new = jit(pr.predict_new_task)
predict_train = jit(pr.predict_training_task)
mixture_moments = jit(pr.mixture_moments)


@jit
def _task_objective(params, tau, post, batch, jitter):
    moments, weights = mstep.task_moments(batch, tau, post, params.log_noise.shape[1])
    return mstep.task_objective(params, batch, moments, weights, jitter)


def _model(params, post, batch, weights, jitter) -> Model:
    """The fitted model of ``params`` and ``post`` on the batch's grid."""
    return Model(
        params,
        post,
        batch.grid,
        batch.grid_mask,
        jnp.asarray(weights),
        jnp.asarray(jitter, jnp.float64),
    )


def _j(*arrays):
    return [jnp.asarray(a) for a in arrays]


def _task_inputs(tasks: ref.Tasks, i: int):
    """Padded inputs, outputs and mask of task ``i`` as the predictors take them."""
    return _j(tasks.x[i], tasks.y[i], tasks.mask[i])


# --------------------------------------------------------------------------- GP limit


def test_single_task_zero_mean_variance_is_ordinary_gp_regression():
    # ALGORITHM.md §8.5: one task, K = 1, c_gamma ~ 0 (variance 1e-10), constant prior mean c:
    # m_hat = c, C_hat ~ 0; prediction = GP regression of y - c with kernel s + sigma^2 delta;
    # the task M-step objective is the GP's negative log marginal likelihood.
    rng = np.random.default_rng(0)
    grid = np.sort(rng.uniform(0.0, 6.0, size=7))[:, None]
    tasks = ref.make_tasks(rng, 1, 9, grid, 7, 7)  # all 7 grid points, 2 padded slots
    layout = SharingLayout.from_flags(1, 1, 1)
    c, var, ls, noise = 1.7, 0.8, 0.9, 0.05
    vals = ref.NpParams(
        mean_var=np.full((1, 1), 1e-10),
        mean_ls=np.ones((1, 1)),
        prior=np.full((1, 1), c),
        task_var=np.full((1, 1, 1), var),
        task_ls=np.full((1, 1, 1), ls),
        noise=np.full((1, 1, 1), noise),
    )
    params = ref.params_from_values(layout, vals)
    batch = ref.to_batch(tasks)
    jitter = 1e-12
    post, _ = e_step(params, jnp.ones(1), jnp.ones((1, 1)), batch, jitter)
    np.testing.assert_allclose(np.asarray(post.mean), c, rtol=1e-9)
    assert np.abs(np.asarray(post.cov)).max() < 1e-9
    x_obs, y_obs, mask_obs = _task_inputs(tasks, 0)
    x_train, y_train, _ = tasks.points(0, 0)
    x_pred = np.array([[-0.5], [1.3], [2.0], [5.5], [7.0]])
    task_params = pr.task_params_of(params, 0)
    for include_noise in (True, False):
        kernel = Const(var, "fixed") * RBF(ls, "fixed")
        if include_noise:
            gpr = GaussianProcessRegressor(
                kernel + WhiteKernel(noise, "fixed"), alpha=1e-14, optimizer=None
            )
        else:
            gpr = GaussianProcessRegressor(kernel, alpha=noise, optimizer=None)
        gpr.fit(x_train, y_train - c)
        mean_sk, cov_sk = gpr.predict(x_pred, return_cov=True)
        model = _model(params, post, batch, jnp.ones(1), 0.0)
        new = predict_new(
            model, task_params, x_obs, y_obs, mask_obs, jnp.asarray(x_pred), include_noise
        )
        train = predict_train(
            model, 0, jnp.ones(1), x_obs, y_obs, mask_obs, jnp.asarray(x_pred), include_noise
        )
        for mean, cov in (new[:2], train):
            np.testing.assert_allclose(np.asarray(mean[0]), mean_sk + c, rtol=1e-7, atol=1e-8)
            np.testing.assert_allclose(np.asarray(cov[0]), cov_sk, rtol=1e-6, atol=1e-8)
    assert float(new[2][0]) == 1.0
    gpr = GaussianProcessRegressor(
        Const(var, "fixed") * RBF(ls, "fixed") + WhiteKernel(noise, "fixed"),
        alpha=1e-14,
        optimizer=None,
    )
    gpr.fit(x_train, y_train - c)
    objective = float(_task_objective(params, jnp.ones((1, 1)), post, batch, jitter))
    np.testing.assert_allclose(objective, -gpr.log_marginal_likelihood_value_, rtol=1e-8)


# --------------------------------------------------------------------------- grid extension


def _extended_tasks(tasks: ref.Tasks, x_new: np.ndarray) -> ref.Tasks:
    """The same tasks on the grid ``G + x_new`` (new points appended; mappings unchanged)."""
    return ref.Tasks(
        x=tasks.x,
        y=tasks.y,
        mask=tasks.mask,
        row=tasks.row,
        mappings=tasks.mappings,
        grid=np.concatenate([tasks.grid, x_new]),
    )


def test_extended_hyperposterior_equals_recomputation_on_extended_grid():
    # ALGORITHM.md §8.9, K = 2, O = 2, cluster-specific kernels, padded training grid.
    rng = np.random.default_rng(1)
    grid = np.linspace(0.0, 7.0, 8)[:, None]
    tasks = ref.make_tasks(rng, 5, 6, grid, 2, 6, n_outputs=2, hole_prob=0.3)
    layout = SharingLayout.from_flags(
        5, 2, 2, shared_task_hps=False, shared_cluster_hps=False, shared_output_hps=False
    )
    params, vals = ref.random_params(rng, layout, mean_ls=(1.2, 2.0))
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=5))
    jitter = 1e-9
    batch = ref.to_batch(tasks, grid_pad=3)
    post, _ = e_step(params, jnp.mean(tau, 0), tau, batch, jitter, False)
    # At the grid points: the hyperposterior itself.
    model = _model(params, post, batch, jnp.mean(tau, 0), jitter)
    mean_g, cov_g = extend(model, jnp.asarray(grid))
    np.testing.assert_allclose(np.asarray(mean_g), np.asarray(post.mean[..., :8]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(cov_g), np.asarray(post.cov[..., :8, :8]), atol=1e-6)
    # At new points (off-grid and beyond it), and jointly with the grid.
    x_new = np.array([[-1.0], [2.5], [4.7], [9.0]])
    both = np.concatenate([grid, x_new])
    mean_x, cov_x = extend(model, jnp.asarray(both))
    big = ref.to_batch(_extended_tasks(tasks, x_new))
    post_big, _ = e_step(params, jnp.mean(tau, 0), tau, big, jitter, False)
    np.testing.assert_allclose(np.asarray(mean_x), np.asarray(post_big.mean), atol=1e-6)
    np.testing.assert_allclose(np.asarray(cov_x), np.asarray(post_big.cov), atol=1e-6)
    # The new point x = 2.5 (index 9) is really informed by the data, not just the prior.
    assert np.all(np.asarray(cov_x)[..., 9, 9] < 0.9 * vals.mean_var)


# --------------------------------------------------------------------------- mixtures


def test_mixture_moments_match_total_covariance_and_monte_carlo():
    rng = np.random.default_rng(2)
    k_n, o_n, p = 3, 2, 4
    means = 2.0 * rng.standard_normal((k_n, o_n, p))
    covs = np.stack([[ref.spd(rng, p, 0.5) for _ in range(o_n)] for _ in range(k_n)])
    tau = np.array([0.2, 0.5, 0.3])
    mean, cov = (np.asarray(a) for a in mixture_moments(*_j(tau, means, covs)))
    expected_mean = np.einsum("k,kop->op", tau, means)
    expected_cov = np.zeros((o_n, p, p))
    for k in range(k_n):
        d = means[k] - expected_mean
        expected_cov += tau[k] * (covs[k] + d[:, :, None] * d[:, None, :])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-13)
    # Monte Carlo: sample the mixture (ALGORITHM.md §8.10).
    n_draws = 200_000
    labels = rng.choice(k_n, size=n_draws, p=tau)
    for o in range(o_n):
        draws = np.empty((n_draws, p))
        for k in range(k_n):
            sel = labels == k
            draws[sel] = rng.multivariate_normal(means[k, o], covs[k, o], size=sel.sum())
        np.testing.assert_allclose(draws.mean(0), mean[o], atol=0.03)
        np.testing.assert_allclose(np.cov(draws.T), cov[o], atol=0.05)
    # One-hot memberships give the single-cluster moments.
    one_mean, one_cov = mixture_moments(*_j(np.eye(k_n)[1], means, covs))
    np.testing.assert_allclose(np.asarray(one_mean), means[1], rtol=1e-15)
    np.testing.assert_allclose(np.asarray(one_cov), covs[1], rtol=1e-15)


def _slice_cluster(params, post: Hyperposterior, k: int):
    """Params and hyperposterior of cluster ``k`` alone (shared kernels, K* = 1)."""
    params = eqx.tree_at(
        lambda p: p.prior_mean.constant, params, params.prior_mean.constant[k : k + 1]
    )
    post = _slice_post(post, k)
    return params, post


def _slice_post(post: Hyperposterior, k: int) -> Hyperposterior:
    return Hyperposterior(
        *(
            getattr(post, f)[k : k + 1]
            for f in ("mean", "cov", "prior_mean", "prior_chol", "whitened_chol", "logdet")
        )
    )


def _new_task_reference(vals, tasks, tau, weights, x_obs, y_obs, x_pred, include_noise):
    """Numpy predictive of a new task (one output), ALGORITHM.md §4.1: hyperposterior
    recomputed on G + t* + t^p, marginal memberships, per-cluster conditioning, mixture."""
    n, p = x_obs.shape[0], x_pred.shape[0]
    new_pts = np.unique(np.concatenate([x_obs, x_pred]), axis=0)
    new_pts = new_pts[~(new_pts[:, None, :] == tasks.grid[None]).all(-1).any(1)]
    big = _extended_tasks(tasks, new_pts)
    mean, cov = ref.hyperposterior(vals, big, tau)

    def index(x):
        return np.array([np.flatnonzero((big.grid == row).all(1))[0] for row in x])

    obs, prd = index(x_obs), index(x_pred)
    k_n = tau.shape[1]
    logits, ybar, v = np.zeros(k_n), [], []
    for k in range(k_n):
        m = mean[k, 0]
        c = cov[k, 0]
        s_oo, s_po, s_pp = (
            vals.task_kernel(0, k, 0, a, b)
            for a, b in ((x_obs, x_obs), (x_pred, x_obs), (x_pred, x_pred))
        )
        g_oo = c[np.ix_(obs, obs)] + s_oo + vals.task_noise(0, k, 0) * np.eye(n)
        g_po = c[np.ix_(prd, obs)] + s_po
        g_pp = c[np.ix_(prd, prd)] + s_pp
        if include_noise:
            g_pp = g_pp + vals.task_noise(0, k, 0) * np.eye(p)
        logits[k] = np.log(weights[k]) - ref.gaussian_nll(y_obs, m[obs], g_oo)
        ybar.append(m[prd] + g_po @ np.linalg.solve(g_oo, y_obs - m[obs]))
        v.append(g_pp - g_po @ np.linalg.solve(g_oo, g_po.T))
    tau_new = np.exp(logits - logits.max())
    tau_new /= tau_new.sum()
    mix = sum(t * y for t, y in zip(tau_new, ybar, strict=True))
    cov_mix = sum(
        t * (vk + np.outer(y - mix, y - mix)) for t, vk, y in zip(tau_new, v, ybar, strict=True)
    )
    return mix, cov_mix, tau_new


@pytest.mark.parametrize("cluster_specific", [False, True])
def test_predict_new_task_matches_numpy_mixture_predictive(cluster_specific):
    rng = np.random.default_rng(3)
    grid = np.linspace(0.0, 7.0, 8)[:, None]
    tasks = ref.make_tasks(rng, 5, 6, grid, 3, 6, n_outputs=1)
    layout = SharingLayout.from_flags(
        5, 2, 1, shared_cluster_hps=False, cluster_specific_task_hps=cluster_specific
    )
    params, vals = ref.random_params(rng, layout)
    vals.prior[:] = [[-0.5], [0.8]]
    params = ref.params_from_values(layout, vals)
    tau = rng.dirichlet(np.ones(2), size=5)
    weights = np.array([0.45, 0.55])
    batch = ref.to_batch(tasks, grid_pad=2)
    post, _ = e_step(params, jnp.asarray(weights), jnp.asarray(tau), batch, 0.0, False)
    # New task: 3 observations (one padded slot in the middle), 4 targets.
    x_obs = np.array([[0.5], [0.0], [3.2], [6.1]])
    mask_obs = np.array([[True], [False], [True], [True]])
    y_obs = np.where(mask_obs, rng.standard_normal((4, 1)), 0.0)
    x_pred = np.array([[-1.0], [1.0], [3.2], [8.0]])
    task_params = pr.task_params_of(params, 0)
    for include_noise in (False, True):
        mean, cov, tau_new = predict_new(
            _model(params, post, batch, jnp.asarray(weights), 0.0),
            task_params,
            *_j(x_obs, y_obs, mask_obs, x_pred),
            include_noise,
        )
        r = mask_obs[:, 0]
        exp_mean, exp_cov, exp_tau = _new_task_reference(
            vals, tasks, tau, weights, x_obs[r], y_obs[r, 0], x_pred, include_noise
        )
        np.testing.assert_allclose(np.asarray(tau_new), exp_tau, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(np.asarray(mean[0]), exp_mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(np.asarray(cov[0]), exp_cov, rtol=1e-7, atol=1e-9)
    assert 0.01 < float(tau_new[0]) < 0.99, "both clusters must matter for this test"


def test_one_hot_memberships_give_the_single_cluster_prediction():
    # Cluster 1's prior mean is 60 away from the data: tau* = (1, 0) exactly, and the K = 2
    # mixture must equal the prediction of the model restricted to cluster 0.
    rng = np.random.default_rng(4)
    grid = np.linspace(0.0, 7.0, 8)[:, None]
    tasks = ref.make_tasks(rng, 4, 6, grid, 3, 6, n_outputs=1)
    layout = SharingLayout.from_flags(4, 2, 1)
    _, vals = ref.random_params(rng, layout)
    vals.prior[:] = [[0.0], [60.0]]
    params = ref.params_from_values(layout, vals)
    tau = np.tile([1.0, 0.0], (4, 1))
    batch = ref.to_batch(tasks)
    post, _ = e_step(params, jnp.asarray([0.5, 0.5]), jnp.asarray(tau), batch, 1e-8, False)
    x_obs, y_obs, mask_obs = _task_inputs(tasks, 2)
    x_pred = jnp.asarray([[-0.5], [2.2], [7.5]])
    task_params = pr.task_params_of(params, 0)
    mean2, cov2, tau2 = predict_new(
        _model(params, post, batch, jnp.asarray([0.5, 0.5]), 1e-8),
        task_params,
        x_obs,
        y_obs,
        mask_obs,
        x_pred,
        True,
    )
    np.testing.assert_array_equal(np.asarray(tau2), [1.0, 0.0])
    params1, post1 = _slice_cluster(params, post, 0)
    mean1, cov1, tau1 = predict_new(
        _model(params1, post1, batch, jnp.ones(1), 1e-8),
        task_params,
        x_obs,
        y_obs,
        mask_obs,
        x_pred,
        True,
    )
    np.testing.assert_allclose(np.asarray(mean2), np.asarray(mean1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(cov2), np.asarray(cov1), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- training tasks


@pytest.mark.parametrize("include_noise", [False, True])
def test_k1_training_task_prediction_is_exact_gaussian_conditioning(include_noise):
    # ALGORITHM.md §4.2: for K = 1, the variational predictive of training task i equals the
    # exact conditional of mu_0 + f_i (+ eps_i) given all training data.
    rng = np.random.default_rng(5)
    grid = np.linspace(0.0, 7.0, 8)[:, None]
    t = 4
    tasks = ref.make_tasks(rng, t, 6, grid, 3, 6, n_outputs=1)
    layout = SharingLayout.from_flags(t, 1, 1, shared_task_hps=False)
    params, vals = ref.random_params(rng, layout)
    batch = ref.to_batch(tasks)
    post, _ = e_step(params, jnp.ones(1), jnp.ones((t, 1)), batch, 0.0, False)
    i = 1
    x_pred = np.array([[-0.7], [tasks.points(i, 0)[0][0, 0]], [3.3], [7.6]])
    model = _model(params, post, batch, jnp.ones(1), 0.0)
    mean, cov = predict_train(
        model, i, jnp.ones(1), *_task_inputs(tasks, i), jnp.asarray(x_pred), include_noise
    )
    # Joint prior of (z, y_1, ..., y_T), z = mu_0(x_pred) + f_i(x_pred) (+ eps).
    xs = [x_pred] + [tasks.points(j, 0)[0] for j in range(t)]
    ys = [tasks.points(j, 0)[1] for j in range(t)]
    sizes = [len(x) for x in xs]
    edges = np.cumsum([0] + sizes)
    x_all = np.concatenate(xs)
    joint = vals.mean_cov(0, 0, x_all, x_all)
    own = np.r_[0 : sizes[0], edges[i + 1] : edges[i + 2]]  # z and y_i share f_i
    joint[np.ix_(own, own)] += vals.task_kernel(i, 0, 0, x_all[own], x_all[own])
    for j in range(t):
        blk = np.arange(edges[j + 1], edges[j + 2])
        extra = vals.task_kernel(j, 0, 0, xs[j + 1], xs[j + 1]) if j != i else 0.0
        joint[np.ix_(blk, blk)] += extra + vals.task_noise(j, 0, 0) * np.eye(blk.size)
    if include_noise:
        joint[: sizes[0], : sizes[0]] += vals.task_noise(i, 0, 0) * np.eye(sizes[0])
    prior = np.full(x_all.shape[0], vals.prior[0, 0])
    obs = np.arange(x_all.shape[0]) >= sizes[0]
    exp_mean, exp_cov = ref.condition(prior, joint, obs, np.concatenate(ys))
    np.testing.assert_allclose(np.asarray(mean[0]), exp_mean, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(np.asarray(cov[0]), exp_cov, rtol=1e-6, atol=1e-8)
    # The new-task formula applied to the same training task counts y_i twice: different.
    new = predict_new(
        model,
        pr.task_params_of(params, i),
        *_task_inputs(tasks, i),
        jnp.asarray(x_pred),
        include_noise,
    )
    assert np.abs(np.asarray(new[1][0]) - exp_cov).max() > 1e-4


# --------------------------------------------------------------------------- fitted model


def test_predict_new_tasks_with_cluster_specific_task_hyperparameters():
    rng = np.random.default_rng(6)
    grid = np.linspace(0.0, 7.0, 8)[:, None]
    tasks = ref.make_tasks(rng, 4, 6, grid, 3, 6, n_outputs=1)
    layout = SharingLayout.from_flags(4, 2, 1, cluster_specific_task_hps=True)
    params, _ = ref.random_params(rng, layout)
    tau = rng.dirichlet(np.ones(2), size=4)
    weights = tau.mean(0)
    batch = ref.to_batch(tasks)
    post, _ = e_step(params, jnp.asarray(weights), jnp.asarray(tau), batch, 1e-6, False)
    result = em.EMResult(
        params=params,
        weights=weights,
        tau=tau,
        post=post,
        elbo=0.0,
        elbo_history=np.zeros(1),
        n_iter=1,
        converged=False,
        jitter=1e-6,
    )
    model = _fitted.FittedMagma(result, batch, 4, 8, layout, _fit.FitConfig(n_clusters=2))
    x_pred = np.repeat(np.array([[[0.5], [4.0]]]), 2, axis=0)
    ctx = model.condition(from_nan(tasks.nan_x()[:2], tasks.nan_y()[:2]))
    mean, var, tau_ctx = model.predict_new_tasks(ctx, from_nan(x_pred))
    mean, var = mean[:, :2], var[:, :2]  # 2 prediction rows in 8 slots
    for j in range(2):
        # The model pads the 6 slots to 8 (its bucket): do the same, so that both paths
        # factorise identical arrays.
        x_o = np.concatenate([tasks.x[j], np.repeat(grid[:1], 2, axis=0)])
        y_o = np.concatenate([tasks.y[j], np.zeros((2, 1))])
        m_o = np.concatenate([tasks.mask[j], np.zeros((2, 1), bool)])
        ref_mean, ref_cov, ref_tau = predict_new(
            _model(params, post, batch, weights, 1e-6),
            pr.task_params_of(params, 0),
            *_j(x_o, y_o, m_o, x_pred[j]),
            True,
        )
        np.testing.assert_allclose(tau_ctx[j], np.asarray(ref_tau), rtol=1e-8)
        np.testing.assert_allclose(mean[j, :, 0], np.asarray(ref_mean[0]), rtol=1e-8)
        np.testing.assert_allclose(var[j, :, 0], np.diag(np.asarray(ref_cov[0])), rtol=1e-8)
