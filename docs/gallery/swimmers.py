# %% [markdown]
# # Swimmers: irregular ages, approximate grid
#
# The bundled `swimmers` data set holds the 100 m freestyle times of 3456 French
# swimmers, 16 to 61 races each, at irregular ages between 10 and 20. **This example
# fits a subset of 100 swimmers with at most 10 EM iterations** so that the docs build
# stays fast; the [benchmarks](../benchmarks.md#swimmers) fit all of them.

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_swimmers
from mimosa_sklearn.plotting import plot_forecast, plot_mean_processes

X_all, y_all = load_swimmers()
chosen = np.random.default_rng(0).permutation(X_all["ID"].unique())[:100]
keep = X_all["ID"].isin(chosen).to_numpy()
X, y = X_all[keep], y_all[keep]
print(f"{len(chosen)} swimmers, {len(X)} races, {X['age_years'].nunique()} distinct ages")

# %% [markdown]
# ## Fit
#
# With irregular ages the exact grid of the mean processes would hold every distinct
# age. The default `grid="auto"` chooses from the data and records why in
# `grid_choice_`.

# %%
train = ~X["ID"].isin(chosen[:10]).to_numpy()
model = MagmaClusterRegressor(n_clusters=3, max_iter=10, random_state=0)
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # max_iter=10 on purpose
model.fit(X[train], y[train])
print(model.grid_choice_.reason)
print(f"{model.n_iter_} EM iterations, converged: {model.converged_}")

fig, ax = plt.subplots(figsize=(7, 4))
plot_mean_processes(model, X[train], y[train], ax=ax)
ax.set_title("Mean race time of each cluster against age")

# %% [markdown]
# ## Forecast a swimmer after 15
#
# A held-out swimmer is conditioned on the races before age 15, and forecast after.

# %%
swimmer = chosen[0]
rows = (X["ID"] == swimmer).to_numpy()
early = rows & (X["age_years"] <= 15).to_numpy()
late = rows & ~early
fig, ax = plt.subplots(figsize=(7, 4))
plot_forecast(model, swimmer, X[early], y[early], X[late], y_true=y[late], ax=ax)
ax.set_title(f"Swimmer {swimmer}: races up to 15, forecast after")
print("memberships:", model.predict_proba(X[late])[0].round(3))
