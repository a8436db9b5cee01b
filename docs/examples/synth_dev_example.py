"""Worked example on the bundled synth_dev data (the code of docs/examples.md).

Run from any folder: ``python docs/examples/synth_dev_example.py``. It prints its
results and saves ``synth_dev_forecast.png`` (when matplotlib is installed) in the
current folder. Cells are separated by ``# %%`` markers, one per code block of
docs/examples.md, so editors can run them one at a time.
"""

# %% Load the data
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV, GroupKFold

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev
from mimosa_sklearn.metrics import coverage, make_forecast_scorer, nlpd

X, y, true_clusters = load_synth_dev(return_clusters=True)
print(X.head(3))
print(f"{X['ID'].nunique()} training tasks, {len(X)} rows")

# %% Fit
model = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X, y)
print(f"EM: {model.n_iter_} iterations, converged: {model.converged_}")
print("mixture weights:", model.weights_.round(2))
print(model.memberships_.head(3).round(3))
ari = adjusted_rand_score(true_clusters.loc[model.task_ids_], model.labels_)
print(f"adjusted Rand index against the true clusters: {ari:.3f}")

# %% Predict with 95% bands
task = X["ID"].iloc[0]
rows = pd.DataFrame({"ID": task, "Input": np.linspace(0.0, 10.0, 6)})
mean, std = model.predict(rows, return_std=True)
bands = rows.assign(mean=mean, lower=mean - 1.96 * std, upper=mean + 1.96 * std)
print(bands.round(2))
# the same table, ready-made
print(model.predict_frame(rows, level=0.95).round(2))

# %% Cluster memberships
proba = model.predict_proba(X)  # one row per row of X
per_task = pd.DataFrame(proba, index=X["ID"]).groupby(level=0, sort=False).first()
print(per_task.head(3).round(3))
print("tasks per cluster:", np.bincount(model.labels_))

# %% Condition new tasks and forecast them
X_obs, y_obs = load_synth_dev("test_observed")  # new tasks, Input <= 6
X_new, y_new = load_synth_dev("test_target")  # the same tasks, Input > 6
model.condition(X_obs, y_obs)
mean, std = model.predict(X_new, return_std=True)
rmse = float(np.sqrt(np.mean((y_new - mean) ** 2)))
print(f"forecast of {X_new['ID'].nunique()} new tasks:")
print(f"  RMSE {rmse:.3f}, NLPD {nlpd(y_new, mean, std):.3f}")
print(f"  95% coverage {coverage(y_new, mean, std):.1%}")
new_task = X_obs["ID"].iloc[0]
tau = model.predict_proba(X_obs[X_obs["ID"] == new_task])[0]
print(f"memberships of {new_task}:", tau.round(3))

# %% Plot (optional: pip install 'mimosa-sklearn[plot]')
try:
    from matplotlib.figure import Figure
except ImportError:
    print("matplotlib is not installed: no figure")
else:
    from mimosa_sklearn.plotting import plot_forecast, plot_mean_processes

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_means, ax_task = fig.subplots(1, 2)
    plot_mean_processes(model, X, y, ax=ax_means)
    plot_forecast(model, new_task, X_obs, y_obs, X_new, y_true=y_new, ax=ax_task)
    fig.savefig("synth_dev_forecast.png", dpi=100)
    print("saved synth_dev_forecast.png")

# %% Choose the number of clusters by cross-validated forecasts
search = GridSearchCV(
    MagmaClusterRegressor(random_state=0),
    param_grid={"n_clusters": [2, 3]},
    cv=GroupKFold(n_splits=2),  # whole tasks are held out
    scoring=make_forecast_scorer("rmse", observed_fraction=0.5),
    n_jobs=2,  # two worker processes, one thread each
)
search.fit(X, y, groups=X["ID"])
results = pd.DataFrame(search.cv_results_)
print(results[["param_n_clusters", "mean_test_score", "std_test_score"]])
print("best:", search.best_params_)
