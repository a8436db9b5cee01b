# %% [markdown]
# # Children's growth: forecast a child's weight to age 6
#
# The bundled `weight` data set follows 342 children of the GUSTO cohort (Singapore),
# weighed 6 to 11 times between birth and 6 years, at the ages {0, 3, 6, 9, 12, 18, 24,
# 36, 48, 60, 72} months. We fit MagmaClust on most children, then forecast the others
# up to 72 months from their weights in the first year only. This example uses the
# whole data set: its 11 distinct ages make the fit cheap.

# %%
import matplotlib.pyplot as plt
import numpy as np

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_weight
from mimosa_sklearn.metrics import coverage
from mimosa_sklearn.plotting import (
    animate_forecast,
    plot_clusters,
    plot_forecast,
    plot_forecast_fan,
    plot_mean_processes,
    plot_memberships,
)

X, y = load_weight()
children = X["ID"].unique()
held_out = np.random.default_rng(0).permutation(children)[:40]
test = X["ID"].isin(held_out).to_numpy()
print(X.head(3))
print(f"{len(children) - len(held_out)} children to fit on, {len(held_out)} to forecast")

# %% [markdown]
# ## Fit three growth patterns
#
# Each child is a task: a Gaussian process around the mean curve of its cluster.

# %%
model = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X[~test], y[~test])
print(f"{model.n_iter_} EM iterations, mixture weights {model.weights_.round(2)}")

fig, ax = plt.subplots(figsize=(7, 4))
plot_mean_processes(model, X[~test], y[~test], ax=ax)
ax.set_title("The three mean growth curves, with 95% bands")

# %% [markdown]
# Which children went where: every child's curve in the colour of its most likely
# cluster, and how sure the clustering is (one row per child, one column per cluster).

# %%
fig, ax = plt.subplots(figsize=(7, 4))
plot_clusters(model, X[~test], y[~test], ax=ax)
fig, ax = plt.subplots(figsize=(4, 6))
plot_memberships(model, ax=ax)

# %% [markdown]
# ## Forecast new children from their first year
#
# `condition` computes the cluster memberships of the held-out children from their
# weights up to 12 months, without refitting; `predict` forecasts the rest.

# %%
first_year = test & (X["age_months"] <= 12).to_numpy()
later = test & ~first_year
model.condition(X[first_year], y[first_year])
mean, std = model.predict(X[later], return_std=True)
rmse = float(np.sqrt(np.mean((y[later] - mean) ** 2)))
print(f"RMSE {rmse:.2f} kg, 95% coverage {coverage(y[later], mean, std):.0%}")

child = held_out[0]
fig, ax = plt.subplots(figsize=(7, 4))
plot_forecast(model, child, X[first_year], y[first_year], X[later], y_true=y[later], ax=ax)
ax.set_title(f"Child {child}: observed to 12 months, forecast to 72")

# %% [markdown]
# The same forecast as a fan: nested 50%, 80% and 95% bands.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
plot_forecast_fan(model, child, X[first_year], y[first_year], X[later], ax=ax)
ax.set_title(f"Child {child}: forecast fan")

# %% [markdown]
# ## Watch the forecast sharpen
#
# `animate_forecast` shows the same child's forecast as its weighings arrive, one at a
# time: the first frame knows no weighing (the mixture of the three mean curves,
# weighted by the clusters' shares), the last one knows them all. The title gives the
# child's cluster memberships in each frame: they move as the weighings come in.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
rows = test & (X["ID"] == child).to_numpy()
anim = animate_forecast(model, child, X[rows], y[rows], X[later], ax=ax, interval=900)
