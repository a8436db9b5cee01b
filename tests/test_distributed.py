"""Multi-process fits on ``jax.distributed`` (:mod:`mimosa_sklearn._processes`).

Every process fits its own share of synth_dev's tasks in a fresh process
(``tests/distributed_worker.py``, CPU collectives through gloo); each must end with the
model of a one-process fit on the union of the shares: ELBO to 1e-6 relative,
memberships and forecasts (training tasks and conditioned new tasks) to 1e-6.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.core import em
from mimosa_sklearn.datasets import load_synth_dev

pytestmark = pytest.mark.slow

_WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(n: int, split: str, tmp_path: Path, k: int = 3) -> list[dict]:
    port = _free_port()
    env = {key: v for key, v in os.environ.items() if key != "XLA_FLAGS"}
    procs, outs = [], []
    for pid in range(n):
        out = tmp_path / f"{split}{n}_{pid}.npz"
        args = [sys.executable, str(_WORKER), str(port), str(n), str(pid), split, str(out), str(k)]
        procs.append(
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        )
        outs.append(out)
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode()[-3000:]
    return [dict(np.load(out)) for out in outs]


def _one_process(k: int = 3):
    X, y = load_synth_dev()
    first = X.groupby("ID").head(3)
    new = first.assign(ID="new_" + first["ID"])
    model = MagmaClusterRegressor(n_clusters=k, random_state=0).fit(X, y)
    model.condition(new, y[first.index])
    return model, X, new


def _assert_same_as_one_process(results: list[dict], k: int = 3) -> None:
    model, X, new = _one_process(k)
    mean, std = model.predict(X, return_std=True)
    new_mean, new_std = model.predict(new, return_std=True)
    proba = model.predict_proba(X)
    seen = []
    for res in results:
        rows = res["rows"]
        np.testing.assert_allclose(res["elbo"][-1], model.elbo_[-1], rtol=1e-6)
        assert res["elbo"].shape == model.elbo_.shape
        np.testing.assert_allclose(res["weights"], model.weights_, atol=1e-6)
        order = np.searchsorted(model.task_ids_, res["ids"])
        np.testing.assert_allclose(
            res["memberships"], model.memberships_.to_numpy()[order], atol=1e-6
        )
        np.testing.assert_allclose(res["proba"], proba[rows], atol=1e-6)
        np.testing.assert_allclose(res["mean"], mean[rows], atol=1e-6)
        np.testing.assert_allclose(res["std"], std[rows], atol=1e-6)
        new_rows = np.flatnonzero(np.isin(new["ID"].str.removeprefix("new_"), res["ids"]))
        np.testing.assert_allclose(res["new_mean"], new_mean[new_rows], atol=1e-6)
        np.testing.assert_allclose(res["new_std"], new_std[new_rows], atol=1e-6)
        seen.extend(res["ids"].tolist())
    # Nothing lost: every task of every process has its memberships and forecasts.
    assert sorted(seen) == sorted(model.task_ids_.tolist())


def test_two_processes_fit_the_one_process_model(tmp_path):
    _assert_same_as_one_process(_run(2, "even", tmp_path))


def test_two_processes_start_from_the_one_process_subsample(tmp_path, monkeypatch):
    results = _run(2, "subsample", tmp_path)
    plain = _one_process()[0].elbo_
    # The subsample is spread over the global task slots, so both layouts gather the
    # same tasks and start from the same hyperparameters.
    monkeypatch.setattr(em, "SUBSAMPLE_TASKS", 16)
    monkeypatch.setattr(em, "SUBSAMPLE_MIN_TASKS", 32)
    _assert_same_as_one_process(results)
    # ... which are not the plain start's: the first iteration differs.
    assert abs(results[0]["elbo"][0] - plain[0]) > 1e-6 * abs(plain[0])


def test_three_processes_with_different_task_counts(tmp_path):
    results = _run(3, "uneven", tmp_path, k=2)
    assert len({res["ids"].size for res in results}) == 3
    _assert_same_as_one_process(results, k=2)


def test_a_task_on_two_processes_is_refused_on_every_process(tmp_path):
    results = _run(2, "overlap", tmp_path)
    assert all(str(res["error"]) == "ValueError" for res in results)
    assert all("disjoint across processes" in str(res["message"]) for res in results)
    # The process holding the shared task names it.
    assert "'train_0000'" in str(results[1]["message"])


def test_invalid_data_on_one_process_stops_every_process(tmp_path):
    results = _run(2, "bad", tmp_path)
    assert "finite" in str(results[1]["message"]) or "NaN" in str(results[1]["message"])
    assert "process(es) 1" in str(results[0]["message"])
