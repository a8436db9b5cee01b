"""Memory estimate of a fit, checked before anything large is allocated.

A fit holds, per cluster and output, a few ``S x S`` matrices on its grid of ``S``
points (prior covariance, hyperposterior covariance, their factors and the M-step's
temporaries), and with the approximate grid an ``M x M`` matrix per task and the
interpolation weights of every task row on the ``M`` inducing inputs. With continuous
inputs and the exact grid, ``S`` is the number of rows, and these matrices outgrow any
machine long before the tasks do. XLA would then fail in the middle of the fit with an
out-of-memory error that names no option; :func:`check_fit_memory` fails first, with
the numbers and the remedy.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = ["FitMemoryError", "available_bytes", "check_fit_memory", "estimate_fit_bytes"]

#: ``S x S`` float64 matrices alive at the peak of a fit, per cluster and output, with
#: a margin. Measured (peak RSS of exact-grid fits, 20 points per task): 16.4 per
#: cluster at K = 2 from G = 2000 to 3000, 13.9 per added cluster at G = 2000.
GRID_MATRICES = 18
#: ``M x M`` float64 matrices per task and output alive at the peak of an
#: approximate-grid fit (each task's ``A^T Psi^-1 A``), with the copies of the
#: ``(rows, M)`` interpolation weights below. Measured with 5000 tasks of 20 points,
#: K = 2: peak RSS grew by 1264 MiB at M = 100 and 7246 MiB at M = 400.
TASK_GRID_MATRICES = 1.25
PROJECTION_COPIES = 4
#: Memory taken by JAX, XLA's compiled programs and the data, whatever the grid.
BASE_BYTES = 512 * 2**20
#: Environment variable that sets the memory a fit may use, in bytes (suffixes K, M,
#: G, T: powers of 1024), instead of the memory the machine reports available.
LIMIT_ENV = "MIMOSA_SKLEARN_MEMORY_LIMIT"


class FitMemoryError(MemoryError):
    """A fit would need more memory than is available (raised before it starts)."""


def estimate_fit_bytes(
    *,
    n_clusters: int,
    n_outputs: int,
    grid_size: int,
    n_tasks: int,
    n_rows: int,
    approximate: bool,
) -> int:
    """Bytes a fit needs at its peak, for the grid-dependent part and a fixed base.

    Parameters
    ----------
    n_clusters, n_outputs : int
        ``K`` and ``O``.
    grid_size : int
        ``S``: the distinct inputs ``G`` of the exact grid, or the inducing inputs ``M``.
    n_tasks : int
        Number of tasks ``T``.
    n_rows : int
        Padded task rows ``T x N``.
    approximate : bool
        Whether the grid is the approximate one (per-task ``M x M`` matrices and
        interpolation weights ``T x N x M``).

    Returns
    -------
    int
        ``8 (GRID_MATRICES K O S^2 + [approximate] (TASK_GRID_MATRICES T O M^2 +
        PROJECTION_COPIES T N M)) + BASE_BYTES``.
    """
    s, o = int(grid_size), int(n_outputs)
    words = GRID_MATRICES * int(n_clusters) * o * s * s
    if approximate:
        words += TASK_GRID_MATRICES * int(n_tasks) * o * s * s
        words += PROJECTION_COPIES * int(n_rows) * s
    return int(8 * words) + BASE_BYTES


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(
            f"{LIMIT_ENV}={text!r} is not a size: give bytes, or a number with K, M, G or T "
            "(e.g. 16G)"
        )
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _host_available() -> int | None:
    """Memory this process may still take on the host: MemAvailable, capped by a
    cgroup (container) limit; ``sysconf`` where there is no ``/proc``."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append(max(limit - used, 0))
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return None
    return min(found)


def _device_available() -> int | None:
    """Free memory of JAX's first device where it reports one (GPUs), else None."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # a backend without statistics, or none at all
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def available_bytes() -> int | None:
    """Memory a fit may use: ``MIMOSA_SKLEARN_MEMORY_LIMIT`` when set, else the free
    memory of the accelerator (when JAX reports it), else the host's available memory;
    None when none can be read."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        return _parse_bytes(text)
    device = _device_available()
    return device if device is not None else _host_available()


def check_fit_memory(**sizes: int | bool) -> None:
    """Raise :class:`FitMemoryError` when :func:`estimate_fit_bytes` exceeds
    :func:`available_bytes`.

    Parameters
    ----------
    **sizes
        The keyword arguments of :func:`estimate_fit_bytes`.

    Raises
    ------
    FitMemoryError
        With the grid size, the estimate, the memory available and the ``grid=``
        option that avoids it.
    """
    need = estimate_fit_bytes(**sizes)
    grid_size = sizes["grid_size"]
    have = available_bytes()
    if have is None or need <= have:
        return
    gib = 2.0**30
    if sizes["approximate"]:
        where = f"an approximate grid of {grid_size} inducing inputs"
        fix = f"Pass fewer inducing inputs (grid=M with M < {grid_size}) or fit fewer tasks"
    else:
        where = f"the exact grid of {grid_size} distinct inputs"
        fix = (
            "Use the approximate grid: grid='auto' (the default) chooses its size from the "
            "data, grid=M takes M inducing inputs (e.g. grid=100)"
        )
    raise FitMemoryError(
        f"This fit would need about {need / gib:.1f} GiB: its mean processes live on "
        f"{where}, {sizes['n_clusters']} cluster(s) x {sizes['n_outputs']} output(s) of "
        f"{grid_size} x {grid_size} matrices, and only {have / gib:.1f} GiB is available. "
        f"{fix}. {LIMIT_ENV} sets the memory a fit may use."
    )
