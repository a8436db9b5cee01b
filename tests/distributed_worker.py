"""One process of a multi-process fit in the tests (``tests/test_distributed.py``).

``python tests/distributed_worker.py PORT N PID SPLIT OUT [K]``: joins ``N`` processes
through ``jax.distributed`` on ``127.0.0.1:PORT``, fits synth_dev's tasks of share
``PID`` (:func:`share`) and saves what it learnt to ``OUT`` (``.npz``), or the error it
raised (``error`` and ``message``).
"""

from __future__ import annotations

import sys

import numpy as np


def share(ids: np.ndarray, n: int, pid: int, split: str) -> np.ndarray:
    """The task ids of process ``pid`` of ``n``.

    ``split``: ``"even"`` deals tasks round-robin; ``"uneven"`` gives process ``p`` a
    block of ``p + 1`` parts of ``n (n + 1) / 2`` (different task counts, so different
    local padding); ``"overlap"`` is ``"even"`` plus the first task on every process;
    ``"bad"`` is ``"even"`` with a NaN input on the last process; ``"subsample"`` is
    ``"even"``, and the fit starts from a subsample of 16 tasks
    (:func:`mimosa_sklearn.core.em.subsample_start`, on from 32 task slots).
    """
    ids = np.sort(np.asarray(ids))
    if split == "uneven":
        bounds = np.round(np.cumsum([0] + [p + 1 for p in range(n)]) / (n * (n + 1) / 2) * ids.size)
        return ids[int(bounds[pid]) : int(bounds[pid + 1])]
    mine = ids[pid::n]
    if split == "overlap" and pid > 0:
        mine = np.concatenate([ids[:1], mine])
    return mine


def main(port: str, n: int, pid: int, split: str, out: str, k: int = 3) -> None:
    import jax

    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=n, process_id=pid)
    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import load_synth_dev

    if split == "subsample":
        from mimosa_sklearn.core import em

        em.SUBSAMPLE_TASKS, em.SUBSAMPLE_MIN_TASKS = 16, 32

    X, y = load_synth_dev()
    sel = X["ID"].isin(share(X["ID"].unique(), n, pid, split)).to_numpy()
    X, y = X[sel].reset_index(drop=True), y[sel].reset_index(drop=True)
    if split == "bad" and pid == n - 1:
        X.loc[0, "Input"] = np.nan
    model = MagmaClusterRegressor(n_clusters=k, random_state=0)
    try:
        model.fit(X, y)
    except ValueError as exc:
        np.savez(out, error=type(exc).__name__, message=str(exc))
        return
    first = X.groupby("ID").head(3)
    new = first.assign(ID="new_" + first["ID"])
    model.condition(new, y[first.index])
    mean, std = model.predict(X, return_std=True)
    new_mean, new_std = model.predict(new, return_std=True)
    np.savez(
        out,
        ids=np.asarray(model.task_ids_, dtype=str),
        rows=np.flatnonzero(sel),
        elbo=model.elbo_,
        weights=model.weights_,
        proba=model.predict_proba(X),
        memberships=model.memberships_.to_numpy(dtype=float),
        mean=mean,
        std=std,
        new_mean=new_mean,
        new_std=new_std,
    )


if __name__ == "__main__":
    port, n, pid, split, out, *rest = sys.argv[1:]
    main(port, int(n), int(pid), split, out, *(int(r) for r in rest))
