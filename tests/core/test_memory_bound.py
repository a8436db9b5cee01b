"""Memory of the EM bounded by the task chunk, not by the number of tasks (issue 23).

XLA's memory analysis of a compiled program gives the bytes of its temporaries. The
VE-step and the VM-step's task objective (value and gradient, as L-BFGS evaluates it)
are compiled for ``T = 64`` and ``T = 1024`` tasks of ``N = 32`` points with the same
chunk of 32 tasks: their temporaries may grow with ``T`` only by ``O(T N)`` (the
padded data, responsibilities, NLLs), never by an ``(T, N, N)`` block per task, which
the previous stacked precisions, moments and autodiff residuals all were (one such
block is 8 KiB per task here; the growth allowed is a quarter of that).
"""

from __future__ import annotations

import core_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em, mstep
from mimosa_sklearn.core.params import TaskBatch

N, G, K, CHUNK = 32, 48, 3, 32


def _batch(n_tasks: int) -> TaskBatch:
    rng = np.random.default_rng(0)
    grid = np.linspace(0.0, 10.0, G)[:, None]
    maps = np.sort(np.stack([rng.choice(G, N, replace=False) for _ in range(n_tasks)]), axis=1)
    return TaskBatch(
        x=jnp.asarray(grid[maps]),
        y=jnp.asarray(rng.normal(size=(n_tasks, N, 1))),
        mask=jnp.ones((n_tasks, N, 1), bool),
        mappings=jnp.asarray(maps, jnp.int32),
        grid=jnp.asarray(grid),
        grid_mask=jnp.ones((G,), bool),
        task_weight=jnp.ones((n_tasks,)),
        task_chunk=CHUNK,
    )


def _temp_bytes(fn, *args) -> int:
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes)


def _growth_per_task(fn) -> float:
    """Temporaries' growth per added task from 64 to 1024 tasks."""
    params, _ = ref.random_params(np.random.default_rng(1), SharingLayout.from_flags(1, K, 1))
    sizes = []
    for t in (64, 1024):
        tau = jnp.full((t, K), 1.0 / K)
        sizes.append(_temp_bytes(fn, params, tau, _batch(t)))
    return (sizes[1] - sizes[0]) / (1024 - 64)


ONE_BLOCK = N * N * 8  # bytes of one task's N x N block


@pytest.mark.slow
def test_em_temporaries_do_not_grow_by_a_block_per_task():
    # One program: the VE-step (hyperposterior, then the NLLs of the new responsibilities)
    # and the VM-step task objective's value and gradient at that hyperposterior.
    def e_and_m(params, tau, batch):
        post, new_tau, nll = em.e_step(params, jnp.full((K,), 1.0 / K), tau, batch, 1e-6)

        def objective(p):
            return mstep.streamed_task_objective(p, batch, new_tau, post, 1e-6)

        return nll, jax.value_and_grad(objective)(params)

    assert _growth_per_task(e_and_m) < ONE_BLOCK / 4
