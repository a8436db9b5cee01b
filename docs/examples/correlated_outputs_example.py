"""Worked example of docs/correlated_outputs.md: two correlated outputs, one missing.

Run from any folder: ``python docs/examples/correlated_outputs_example.py``. It prints
its results and saves ``correlated_outputs_forecast.png`` (when matplotlib is installed)
in the current folder; the figure of the docs was made from the ``docs`` folder. Cells
are separated by ``# %%`` markers, one per code block of docs/correlated_outputs.md.
"""

# %% Simulate two correlated outputs
import numpy as np
import pandas as pd

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.metrics import coverage


def simulate(n_tasks, seed, n_points=15, rho=0.95):
    """Two outputs per task, "a" and "b", that share the task's own deviation f."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n_points)
    d2 = (x[:, None] - x[None, :]) ** 2
    cov_mean = np.exp(-0.5 * d2 / 2.5**2) + 1e-8 * np.eye(n_points)
    cov_task = 2.0 * np.exp(-0.5 * d2 / 2.0**2) + 1e-8 * np.eye(n_points)
    means = [rng.multivariate_normal(np.full(n_points, m), cov_mean) for m in (-2.0, 2.0)]
    frames = []
    for i in range(n_tasks):
        mu = means[i % 2]  # two clusters
        f, g = rng.multivariate_normal(np.zeros(n_points), cov_task, size=2)
        a = mu + f + 0.1 * rng.normal(size=n_points)
        b = 0.5 * mu + 1.0 + rho * f + np.sqrt(1 - rho**2) * g + 0.1 * rng.normal(size=n_points)
        frames.append(pd.DataFrame({"ID": f"{seed}_{i:02d}", "Input": x, "a": a, "b": b}))
    df = pd.concat(frames, ignore_index=True)
    return df[["ID", "Input"]], df[["a", "b"]]


X, Y = simulate(20, seed=0)  # training tasks, both outputs everywhere
X_new, Y_new = simulate(4, seed=1)  # new tasks
future = (X_new["Input"] > 6).to_numpy()
Y_obs = Y_new.copy()
Y_obs.loc[future, "b"] = np.nan  # "b" is not observed beyond Input = 6, "a" is
print(pd.concat([X_new, Y_obs], axis=1).tail(3).round(2))

# %% Fit correlated and independent outputs
models = {
    "correlated": MagmaClusterRegressor(
        n_clusters=2, correlated_outputs=True, max_iter=50, random_state=0
    ),
    "independent": MagmaClusterRegressor(
        n_clusters=2, shared_output_hps=False, max_iter=50, random_state=0
    ),
}
for name, model in models.items():
    model.fit(X, Y)
    print(f"{name}: {model.n_iter_} EM iterations, clusters {np.bincount(model.labels_)}")

# %% Forecast the missing output
for name, model in models.items():
    model.condition(X_new, Y_obs)  # a everywhere, b up to Input = 6
    mean, std = model.predict(X_new[future], return_std=True)
    truth = Y_new["b"].to_numpy()[future]
    rmse = float(np.sqrt(np.mean((mean[:, 1] - truth) ** 2)))
    cover = coverage(truth, mean[:, 1], std[:, 1])
    print(f"{name:>11}: RMSE of b beyond Input = 6: {rmse:.3f}, 95% coverage {cover:.0%}")

# %% What the correlated model learned
hps = models["correlated"].hyperparameters_
for group in ("mean_kernel", "task_kernel"):
    B = hps[f"{group}.coregionalisation"].reshape(2, 2)
    print(f"{group}: B =\n{B.round(3)}\n  correlation {B[0, 1] / np.sqrt(B[0, 0] * B[1, 1]):.2f}")

# %% Shapes of the predictions
model = models["correlated"]
rows = X_new[X_new["ID"] == X_new["ID"].iloc[0]]
mean, std = model.predict(rows, return_std=True)  # (n_rows, 2) each
_, cov = model.predict(rows, return_cov=True)  # (n_rows, n_rows, 2): one block per output
proba = model.predict_proba(rows)  # (n_rows, 2 clusters)
draws = model.sample_y(rows, n_samples=5, random_state=0)  # (n_rows, 2, 5), joint draws
print(mean.shape, std.shape, cov.shape, proba.shape, draws.shape)

# %% Plot (optional: pip install 'mimosa-sklearn[plot]')
try:
    from matplotlib.figure import Figure
except ImportError:
    print("matplotlib is not installed: no figure")
else:
    from mimosa_sklearn.plotting import plot_forecast

    task = X_new["ID"].iloc[0]
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for row, (name, model) in enumerate(models.items()):
        for col, output in enumerate(["a", "b"]):
            ax = axes[row, col]
            truth = Y_new[future] if output == "b" else None  # "a" is observed there
            plot_forecast(
                model, task, X_new, Y_obs, X_new[future], y_true=truth, output=output, ax=ax
            )
            ax.set_title(f"{name} outputs: {output} of task {task}")
    fig.savefig("correlated_outputs_forecast.png", dpi=90)
    print("saved correlated_outputs_forecast.png")
