# %% [markdown]
# # Saving and loading a model
#
# A fitted estimator, with the tasks it was conditioned on, saves with skops, pickle or
# joblib, and the loaded model predicts exactly as the saved one did. **The fit below
# stops after 5 EM iterations** to keep the docs build fast.

# %%
import joblib
import numpy as np
import skops.io as sio

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev

X, y = load_synth_dev()
X_obs, y_obs = load_synth_dev("test_observed")
X_new, _ = load_synth_dev("test_target")
model = MagmaClusterRegressor(n_clusters=3, max_iter=5, random_state=0).fit(X, y)
model.condition(X_obs, y_obs)
mean = model.predict(X_new)

# %% [markdown]
# ## skops: no code runs from the file
#
# skops lists the types a file needs; check them, then trust them. A model with the
# default or kernax kernels needs only the estimator's class.

# %%
sio.dump(model, "model.skops")
untrusted = sio.get_untrusted_types(file="model.skops")
print(untrusted)
loaded = sio.load("model.skops", trusted=untrusted)
print("same forecasts:", np.array_equal(loaded.predict(X_new), mean))

# %% [markdown]
# ## joblib (or pickle): for files you trust
#
# Loading a pickle runs code from the file, so load only files you wrote yourself.

# %%
joblib.dump(model, "model.joblib")
loaded = joblib.load("model.joblib")
print("same forecasts:", np.array_equal(loaded.predict(X_new), mean))
print("conditioned tasks kept:", loaded.predict_proba(X_obs).shape)
