# %% [markdown]
# # Choosing the number of clusters
#
# Two ways to choose `K` on `synth_dev`, the small synthetic data set bundled with the
# package (60 tasks drawn from 3 clusters): the variational BIC, one fit per
# candidate, and `GridSearchCV` on the forecasts of held-out tasks. **To keep the docs
# build fast, the fits stop after at most 10 EM iterations, and the search uses 2
# folds and does not refit**; drop `max_iter` for real use.

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, GroupKFold

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev
from mimosa_sklearn.metrics import make_forecast_scorer
from mimosa_sklearn.selection import select_n_clusters

X, y = load_synth_dev()
base = MagmaClusterRegressor(max_iter=10, random_state=0)
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # max_iter=10 on purpose

# %% [markdown]
# ## Variational BIC
#
# `VBIC = ELBO - n_parameters / 2 * log(n_tasks)`: the training data only, one fit per
# candidate.

# %%
table, best = select_n_clusters(base, X, y, candidates=[2, 3, 4])
print(table[["elbo", "n_parameters", "vbic"]].round(1))
print("VBIC picks K =", best.n_clusters)

# %% [markdown]
# ## Cross-validation of forecasts
#
# `GroupKFold` holds whole tasks out; the forecast scorer conditions each held-out task
# on the first half of its points and scores the forecast of the rest (RMSE, negated so
# that greater is better). `n_jobs` may go up to the number of cores.

# %%
search = GridSearchCV(
    base,
    {"n_clusters": [2, 3]},
    cv=GroupKFold(n_splits=2),
    scoring=make_forecast_scorer("rmse", observed_fraction=0.5),
    refit=False,  # only the scores here; the default refits the best K on all the data
)
search.fit(X, y, groups=X["ID"])
scores = pd.DataFrame(search.cv_results_)[["param_n_clusters", "mean_test_score"]]
print(scores.round(3))
print("cross-validation picks", search.best_params_)

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(table.index, table["vbic"], "o-")
left.set(xlabel="K", ylabel="VBIC (greater is better)", title="Variational BIC")
left.set_xticks(table.index)
right.plot(scores["param_n_clusters"].astype(int), -scores["mean_test_score"], "o-")
right.set(xlabel="K", ylabel="forecast RMSE", title="GroupKFold, forecast scorer")
right.set_xticks(scores["param_n_clusters"].astype(int))
