"""Pure-JAX numerical core of MagmaClust (no pandas, no scikit-learn).

Importing the core first makes JAX's CPU backend safe from the jaxlib 0.10 thread-pool
deadlock (see :mod:`mimosa_sklearn.core.runtime`), before any array is created.
"""

from .runtime import ensure_safe_cpu_backend

ensure_safe_cpu_backend()
