"""Default kernax kernels and mean functions, and the hyperparameter sharing layout.

The core encodes sharing in the leading axes of the hyperparameter leaves; this module
turns the estimator's sharing flags into those shapes and builds data-driven defaults:
:func:`default_params` for independent outputs, :func:`correlated_params` for outputs
modelled jointly by multi-output kernels on stacked ``(x, output)`` inputs.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import kernax
import numpy as np

from ._padded import Padded
from .core.compile import to_device
from .core.init import data_scales
from .core.multioutput import PerOutputMean, StackedOutputKernel
from .core.params import Params, stack_module, to_float64

__all__ = [
    "SharingLayout",
    "default_kernel",
    "default_prior_mean",
    "build_params",
    "default_params",
    "correlated_kernel",
    "correlated_prior_mean",
    "correlated_params",
    "kernel_hyperparameters",
    "count_trainable",
]

# kernax kernels that already take ``output_ids`` and give cross-output covariances.
_MULTI_OUTPUT_KERNELS = (kernax.ICMKernel, kernax.LCMKernel, kernax.ConvolutionKernel)


@dataclasses.dataclass(frozen=True)
class SharingLayout:
    """Leading-axis sizes of every hyperparameter group.

    Attributes
    ----------
    mean : (K*, O*) of the mean-process kernel.
    prior : (K, O*) of the prior mean functions (always one per cluster).
    task : (T*, K*, O*) of the task kernel and noise.
    """

    mean: tuple[int, int]
    prior: tuple[int, int]
    task: tuple[int, int, int]

    @classmethod
    def from_flags(
        cls,
        n_tasks: int,
        n_clusters: int,
        n_outputs: int,
        *,
        shared_task_hps: bool = True,
        shared_cluster_hps: bool = True,
        cluster_specific_task_hps: bool = False,
        shared_output_hps: bool = True,
    ) -> SharingLayout:
        """Layout for the four sharing options of ALGORITHM.md §1.2."""
        o = 1 if shared_output_hps else n_outputs
        kc = 1 if shared_cluster_hps else n_clusters
        kt = n_clusters if cluster_specific_task_hps else 1
        tt = 1 if shared_task_hps else n_tasks
        return cls(mean=(kc, o), prior=(n_clusters, o), task=(tt, kt, o))


def default_kernel(variance: float, length_scale: float | np.ndarray, n_inputs: int):
    """``variance * SE(length_scale)``; ARD length scales when there are several inputs."""
    if n_inputs == 1:
        return kernax.VarianceKernel(float(variance)) * kernax.SEKernel(
            float(np.ravel(length_scale)[0])
        )
    scales = np.broadcast_to(np.asarray(length_scale, dtype=float), (n_inputs,)).copy()
    inner = kernax.SEKernel(
        1.0, length_scale_parametrisation=kernax.parametrisations.NonTrainableParametrisation()
    )
    return kernax.VarianceKernel(float(variance)) * kernax.ARDKernel(inner, scales)


def default_prior_mean(value: float = 0.0):
    """A learned constant prior mean."""
    return kernax.ConstantMean(float(value))


def build_params(
    layout: SharingLayout,
    mean_kernel,
    prior_mean,
    task_kernel,
    noise: float | np.ndarray,
    prior_values: np.ndarray | None = None,
) -> Params:
    """Stack kernels to the layout's shapes (float64) into a :class:`Params`.

    ``prior_values`` (K, O*) optionally sets per-cluster starting constants of a
    :class:`kernax.ConstantMean` prior mean (other mean functions are broadcast).
    """
    mean_kernel = stack_module(to_float64(mean_kernel), layout.mean)
    task_kernel = stack_module(to_float64(task_kernel), layout.task)
    prior = stack_module(to_float64(prior_mean), layout.prior)
    if prior_values is not None and isinstance(prior_mean, kernax.ConstantMean):
        values = np.broadcast_to(np.asarray(prior_values, np.float64), layout.prior)
        prior = eqx.tree_at(lambda m: m.constant, prior, to_device(values))
    log_noise = np.broadcast_to(np.log(np.asarray(noise, np.float64)), layout.task)
    return Params(mean_kernel, prior, task_kernel, to_device(log_noise))


def kernel_hyperparameters(kernel) -> dict[str, np.ndarray]:
    """Readable (constrained) hyperparameter values of an unbatched kernax module.

    Walks the module tree and reads every public property backed by a stored
    parameter (``variance``, ``length_scale``, ``length_scales``, ``constant``...).
    """
    out: dict[str, np.ndarray] = {}

    def walk(mod, prefix: str):
        if not isinstance(mod, eqx.Module):
            return
        for f in dataclasses.fields(mod):
            value = getattr(mod, f.name, None)
            name = f.name.lstrip("_")
            if isinstance(value, eqx.Module) and not f.name.endswith("parametrisation"):
                walk(value, f"{prefix}{name}.")
            elif eqx.is_inexact_array(value):
                public = getattr(mod, name, value)
                out[f"{prefix}{name}"] = np.asarray(public)

    walk(kernel, "")
    return out


def count_trainable(module) -> int:
    """Number of trainable scalars in a (possibly stacked) kernax module.

    Parameters held with :class:`kernax.parametrisations.NonTrainableParametrisation`
    (e.g. the unit length scale inside an ARD kernel) are not counted.
    """
    total = 0

    def walk(mod):
        nonlocal total
        if not isinstance(mod, eqx.Module):
            return
        names = {f.name for f in dataclasses.fields(mod)}
        for f in dataclasses.fields(mod):
            value = getattr(mod, f.name, None)
            if isinstance(value, eqx.Module):
                walk(value)
            elif eqx.is_inexact_array(value):
                param = getattr(mod, f"{f.name}_parametrisation", None)
                if f"{f.name}_parametrisation" in names and isinstance(
                    param, kernax.parametrisations.NonTrainableParametrisation
                ):
                    continue
                total += int(np.size(value))

    walk(module)
    return total


def _start_levels(tau: np.ndarray, y0: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """``(K, O)`` average of every output over each cluster's initial tasks."""
    num = tau.T @ np.where(obs, y0, 0.0).sum(axis=1)
    den = np.maximum(tau.T @ obs.sum(axis=1), 1e-12)
    return num / den


def _real(tasks: Padded) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, outputs (0 where not observed), observed and row masks of the real tasks."""
    t = tasks.n_tasks
    return tasks.x[:t], tasks.y[:t], tasks.observed[:t], tasks.rows[:t]


def default_params(
    layout: SharingLayout,
    tasks: Padded,
    tau: np.ndarray,
    *,
    mean_kernel=None,
    task_kernel=None,
    prior_mean=None,
) -> Params:
    """Starting hyperparameters of independent outputs.

    ``tau`` (T, K) are the initial memberships of the real tasks. Kernels left None get
    data-driven SE defaults (length scales a quarter and a tenth of the input span);
    every cluster's constant prior mean starts at the average of its initial tasks.
    """
    x, y0, obs, rows = _real(tasks)
    span, var = data_scales(x, y0, obs, rows)
    n_inputs = x.shape[-1]
    var_mean = float(np.mean(var))
    mean_kernel = mean_kernel or default_kernel(var_mean, span / 4.0, n_inputs)
    task_kernel = task_kernel or default_kernel(0.25 * var_mean, span / 10.0, n_inputs)
    prior = prior_mean or default_prior_mean(0.0)
    start = _start_levels(tau, y0, obs)  # (K, O)
    start = start.mean(axis=1, keepdims=True) if layout.prior[1] == 1 else start
    return build_params(layout, mean_kernel, prior, task_kernel, 0.05 * var_mean, start)


def _inner_kernel(length_scale: float | np.ndarray, n_inputs: int):
    """Unit-variance SE (ARD with several inputs): ``B`` carries the variances."""
    if n_inputs == 1:
        return kernax.SEKernel(float(np.ravel(length_scale)[0]))
    scales = np.broadcast_to(np.asarray(length_scale, dtype=float), (n_inputs,)).copy()
    unit = kernax.SEKernel(
        1.0, length_scale_parametrisation=kernax.parametrisations.NonTrainableParametrisation()
    )
    return kernax.ARDKernel(unit, scales)


def correlated_kernel(
    kernel, variances: np.ndarray, length_scale: float | np.ndarray, n_inputs: int
) -> StackedOutputKernel:
    """Multi-output kernel on stacked inputs for ``len(variances)`` outputs.

    Parameters
    ----------
    kernel : kernax kernel or None
        None: the ICM ``B k(x, x')`` with a unit-variance SE ``k`` (ARD length scales
        over the inputs when ``n_inputs >= 2``) and a full-rank ``B = W W^T +
        diag(kappa)`` starting diagonal (independent outputs, ``variances`` on the
        diagonal), so correlations are learned from the data. A kernax multi-output
        kernel (ICM, LCM, convolution) is used as is; any other kernax kernel becomes
        the ``k`` of such an ICM.
    variances : array of shape (O,)
        Starting variance of each output.
    length_scale : float or array of shape (I,)
        Starting length scale(s) of the default ``k``.
    n_inputs : int
        Input dimension ``I`` (without the output column).
    """
    n_out = int(np.size(variances))
    if isinstance(kernel, StackedOutputKernel):
        return kernel
    if isinstance(kernel, _MULTI_OUTPUT_KERNELS):
        if getattr(kernel, "n_outputs", n_out) != n_out:
            raise ValueError(
                f"The multi-output kernel has {kernel.n_outputs} outputs but y has {n_out}."
            )
        return StackedOutputKernel(kernel, n_out)
    half = 0.5 * np.asarray(variances, dtype=float)
    if kernel is None:
        inner = _inner_kernel(length_scale, n_inputs)
    else:  # the user's kernel keeps its own variance: B starts at the identity
        inner, half = kernel, np.full(n_out, 0.5)
    icm = kernax.ICMKernel(inner, n_out, n_out, kappa=half).replace(W=np.diag(np.sqrt(half)))
    return StackedOutputKernel(icm, n_out)


def correlated_prior_mean(mean, n_outputs: int) -> PerOutputMean:
    """One copy of a single-output kernax mean per output (None: a learned constant)."""
    if isinstance(mean, PerOutputMean):
        return mean
    mean = kernax.ConstantMean(0.0) if mean is None else mean
    return PerOutputMean(stack_module(to_float64(mean), (n_outputs,)), n_outputs)


def correlated_params(
    layout: SharingLayout,
    tasks: Padded,
    tau: np.ndarray,
    *,
    mean_kernel=None,
    task_kernel=None,
    prior_mean=None,
) -> Params:
    """Starting hyperparameters of correlated outputs (arguments as
    :func:`default_params`, ``tasks`` in the caller's layout of ``O`` outputs).

    The kernels become multi-output kernels of stacked inputs
    (:func:`correlated_kernel`); the default prior mean is one learned constant per
    cluster and output, each starting at the output's average over the cluster's
    initial tasks.
    """
    x, y0, obs, rows = _real(tasks)
    span, var = data_scales(x, y0, obs, rows)
    n_in = x.shape[-1]
    mean_k = correlated_kernel(mean_kernel, var, span / 4.0, n_in)
    task_k = correlated_kernel(task_kernel, 0.25 * var, span / 10.0, n_in)
    prior = correlated_prior_mean(prior_mean, y0.shape[-1])
    params = build_params(layout, mean_k, prior, task_k, 0.05 * float(np.mean(var)))
    if prior_mean is None:
        levels = to_device(_start_levels(tau, y0, obs)[:, None, :], jnp.float64)
        params = eqx.tree_at(lambda p: p.prior_mean.mean.constant, params, levels)
    return params
