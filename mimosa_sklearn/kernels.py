"""Default kernax kernels and mean functions, and the hyperparameter sharing layout.

The core encodes sharing in the leading axes of the hyperparameter leaves; this module
turns the estimator's sharing flags into those shapes and builds data-driven defaults.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import kernax
import numpy as np

from .core.compile import to_device
from .core.params import Params, stack_module, to_float64

__all__ = [
    "SharingLayout",
    "default_kernel",
    "default_prior_mean",
    "build_params",
    "kernel_hyperparameters",
    "count_trainable",
]


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
