# %% [markdown]
# # A fit across processes
#
# Curves that do not fit in one process can be fitted by several, with JAX's own
# distributed runtime: each process holds its own tasks, and together they fit **one**
# model, the one a single process would fit on all the tasks. Here two processes on
# this machine each take half of the 60 synth_dev curves; the
# [guide](../guide.md#fits-across-processes) has the recipes for Slurm and for several
# GPUs.
#
# Each process runs the same script: `jax.distributed.initialize` first (before any
# JAX computation), then an ordinary `fit` on its own rows. Process 0 saves its
# fitted estimator so that this page can look at it.

# %%
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import matplotlib.pyplot as plt

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev
from mimosa_sklearn.plotting import plot_clusters

WORKER = """
import sys

import jax

n, rank, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=n, process_id=rank)

import joblib
import numpy as np
from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev

X, y = load_synth_dev()
ids = X["ID"].unique()
mine = X["ID"].isin(ids[rank::n]).to_numpy()  # every n-th curve
model = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X[mine], y[mine])
print(
    f"process {rank}: {model.n_tasks_} tasks, {model.n_iter_} iterations, "
    f"ELBO {model.elbo_[-1]:.9f}, weights {np.round(model.weights_, 4)}"
)
if rank == 0:
    joblib.dump((model, X[mine], y[mine]), "process0.joblib")
"""
Path("fit_share.py").write_text(WORKER)

# %% [markdown]
# Launch two processes and wait for both. In a shell this is
# `python fit_share.py 2 0 12355 & python fit_share.py 2 1 12355 & wait`.

# %%
with socket.socket() as s:  # a free port for the coordinator
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
workers = [
    subprocess.Popen(
        [sys.executable, "fit_share.py", "2", str(rank), port],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for rank in range(2)
]
for worker in workers:
    out, err = worker.communicate(timeout=600)
    if worker.returncode:
        raise RuntimeError(err)
    # gloo, JAX's CPU collectives, says hello on stdout too
    print("\n".join(line for line in out.splitlines() if not line.startswith("[Gloo]")))

# %% [markdown]
# Both processes end with the same model. It is the model of one process fitting all
# 60 curves:

# %%
X, y = load_synth_dev()
one = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X, y)
print(f"one process: {one.n_tasks_} tasks, ELBO {one.elbo_[-1]:.9f}")

# %% [markdown]
# Process 0's estimator is an ordinary fitted estimator: its memberships are those of
# its own 30 curves, and it forecasts, plots and saves like any other, without the
# other process.

# %%
model, X0, y0 = joblib.load("process0.joblib")
print(model.memberships_.head())
fig, ax = plt.subplots(figsize=(7, 4))
plot_clusters(model, X0, y0, ax=ax)
ax.set_title("Process 0's curves under the mean processes fitted by both processes")
