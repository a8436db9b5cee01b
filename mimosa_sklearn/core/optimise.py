"""L-BFGS minimisation of a scalar objective over a pytree (optimistix)."""

from __future__ import annotations

import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["minimise"]


def minimise(fn, dynamic, args, max_steps: int, tol: float):
    """Minimise ``fn(dynamic, args)`` over the pytree ``dynamic`` with L-BFGS.

    The pytree is raveled into one vector first: optimistix's L-BFGS keeps its history
    per leaf, and one leaf instead of many cuts the compiled program's size by about a
    third. The backtracking Armijo search accepts a step only when it lowers a finite
    objective, so the result never increases the objective (the generalised EM step
    stays monotone); a non-finite final value falls back to the start.
    Returns the new pytree, the objective value at the optimiser's result (non-finite
    when it fell back, so that callers can detect the failure) and the number of
    steps taken.
    """
    # Imported when a program is traced, not when the package is: a process whose
    # programs all come from the cache never pays its import (0.2 s).
    import optimistix as optx

    flat, unravel = ravel_pytree(dynamic)
    solver = optx.LBFGS(rtol=tol, atol=tol)
    sol = optx.minimise(
        lambda v, a: fn(unravel(v), a), solver, flat, args, max_steps=max_steps, throw=False
    )
    # After the first (always accepted) step, f_info holds the value at sol.value.
    value = sol.state.f_info.f
    ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(sol.value))
    new = unravel(jnp.where(ok, sol.value, flat))
    return new, value, sol.stats["num_steps"]
