"""The progress bar of a verbose fit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Context manager yielding the EM callback: a tqdm bar when verbose, else None."""

    def __init__(self, verbose: int, total: int) -> None:
        self.verbose = verbose
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Callable[[int, float], None] | None:
        if not self.verbose:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="MagmaClust EM", unit="iter")

        def callback(iteration: int, elbo: float) -> None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"ELBO={float(elbo):.6g}")

        return callback

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()
