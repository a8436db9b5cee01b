"""Saving and loading estimators (``mimosa_sklearn._persistence``).

Proven: a fitted estimator's saved state holds only plain values (no equinox module,
JAX array, object of the package or pandas table), so that skops lists nothing but the
estimator's class as a type to trust (and a user's own kernel class and function,
saved by reference); through ``skops.io``, pickle and joblib, alone and inside a
``Pipeline``, a loaded estimator predicts bit-identically (means, standard deviations,
memberships of training, conditioned and unseen tasks) for the default model, a kernax
kernel, a user's kernel class, task-specific hyperparameters, inducing inputs, several
independent outputs and correlated outputs; loading leaves JAX's x64 flag off and the
model in float64; :func:`pack_state` leaves the caller's dict alone; states of a newer
persistence format, of none (pickles from before formats) or of an incompatible
package version (the rule on a table of versions) are refused with messages naming
both formats or versions and what to do.
"""

from __future__ import annotations

import pickle
import warnings

import jax
import joblib
import kernax
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from user_kernels import UserSEKernel

import mimosa_sklearn
from mimosa_sklearn import MagmaClusterRegressor, _persistence
from mimosa_sklearn._persistence import FORMAT, pack_state, unpack_state
from mimosa_sklearn.core import runtime

runtime.ensure_safe_cpu_backend()  # before this module's own JAX arrays

ESTIMATOR = "mimosa_sklearn._estimator.MagmaClusterRegressor"
USER_TYPES = ["user_kernels.UserSEKernel", "user_kernels.squared_distances"]
PLAIN = (str, int, float, bool, type(None), np.ndarray, np.generic)


@pytest.fixture(scope="module")
def data():
    """Four tasks of five rows in two groups (offsets -2 / +2)."""
    rng = np.random.default_rng(0)
    x = np.tile(np.linspace(0.0, 4.0, 5), 4)
    codes = np.repeat(np.arange(4), 5)
    y = np.sin(x) + np.where(codes % 2, 2.0, -2.0) + rng.normal(scale=0.1, size=x.size)
    return pd.DataFrame({"ID": [f"t{c}" for c in codes], "x": x}), y


def _fit(X, y, **params) -> MagmaClusterRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(n_clusters=2, max_iter=3, random_state=0, **params).fit(X, y)


def _two_outputs(y: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({"a": y, "b": -0.5 * y + np.cos(np.arange(y.size))})
    out.loc[3, "b"] = np.nan
    return out


def _condition(est: MagmaClusterRegressor, X: pd.DataFrame, y) -> MagmaClusterRegressor:
    """``est`` given two new tasks (copies of training tasks' first rows)."""
    rows = X["ID"].isin(["t0", "t1"]) & (X["x"] < 3.0)
    X_new = X[rows].assign(ID=X.loc[rows, "ID"] + "_new")
    y_new = y[rows.to_numpy()] + 0.05
    return est.condition(X_new, y_new)


def _rows(X: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows: training tasks, both conditioned tasks and an unseen task."""
    between = X.iloc[:5].assign(x=X["x"].iloc[:5] + 0.5)
    new = [between.assign(ID=name) for name in ("t0_new", "t1_new", "unseen")]
    return pd.concat([X, between, *new], ignore_index=True)


def _outputs(est, X) -> list[np.ndarray]:
    mean, std = est.predict(X, return_std=True)
    return [mean, std, est.predict_proba(X)]


def _non_plain(value, path="state"):
    """Paths of values that are neither containers nor plain values."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_plain(v, f"{path}[{k!r}]")]
    if type(value) in (list, tuple):
        return [p for i, v in enumerate(value) for p in _non_plain(v, f"{path}[{i}]")]
    return [] if isinstance(value, PLAIN) else [f"{path}: {type(value).__name__}"]


def _round_trips(est, tmp_path, trusted):
    """``est`` back from skops (trusting ``trusted``), pickle and joblib."""
    sio.dump(est, tmp_path / "model.skops")
    assert sorted(sio.get_untrusted_types(file=tmp_path / "model.skops")) == sorted(trusted)
    joblib.dump(est, tmp_path / "model.joblib")
    return {
        "skops": sio.load(tmp_path / "model.skops", trusted=trusted),
        "pickle": pickle.loads(pickle.dumps(est)),
        "joblib": joblib.load(tmp_path / "model.joblib"),
    }


# ---------------------------------------------------------------------- round trips


# (estimator parameters, outputs, types skops lists besides the estimator's class).
# Each fit compiles its own programs (5-10 s): pickle round trips of the slow ones also
# run by default (test_correlated_outputs, test_approx_grid), the codec of their
# kernels in test_spec.
KERNAX = kernax.VarianceKernel(2.0) * kernax.Matern52Kernel(1.0)
CONFIGS = [
    pytest.param({"mean_kernel": KERNAX}, 1, [], id="kernax_kernel"),
    pytest.param({"task_kernel": UserSEKernel(0.5, 1.0)}, 1, USER_TYPES, id="user_kernel"),
    pytest.param({"shared_task_hps": False}, 1, [], id="task_hps", marks=pytest.mark.slow),
    pytest.param({"grid": 3}, 1, [], id="inducing_grid", marks=pytest.mark.slow),
    pytest.param({}, 2, [], id="independent_outputs", marks=pytest.mark.slow),
    pytest.param(
        {"correlated_outputs": True}, 2, [], id="correlated_outputs", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize(("params", "n_outputs", "user_types"), CONFIGS)
def test_round_trips_predict_identically(params, n_outputs, user_types, data, tmp_path):
    X, y = data
    y = y if n_outputs == 1 else _two_outputs(y)
    est = _condition(_fit(X, y, **params), X, y)
    expected = _outputs(est, _rows(X))
    for fmt, loaded in _round_trips(est, tmp_path, [ESTIMATOR, *user_types]).items():
        assert set(loaded._contexts) == {"t0_new", "t1_new"}, fmt
        for got, want in zip(_outputs(loaded, _rows(X)), expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=fmt)


def test_skops_round_trip_of_the_default_model(data, tmp_path):
    X, y = data
    est = _condition(_fit(X, y), X, y)
    state = est.__getstate__()
    assert _non_plain(state) == []  # arrays and plain values only
    assert state["_mimosa_format"] == FORMAT
    assert "memberships_" not in state  # a table, rebuilt on loading
    sio.dump(est, tmp_path / "model.skops")
    assert sio.get_untrusted_types(file=tmp_path / "model.skops") == [ESTIMATOR]
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.load(tmp_path / "model.skops")  # nothing is trusted without being asked
    with jax.enable_x64(False):
        loaded = sio.load(tmp_path / "model.skops", trusted=[ESTIMATOR])
        assert not jax.config.jax_enable_x64  # the user's setting is left alone
    floats = [a for a in jax.tree.leaves(loaded.model_.model) if a.dtype.kind == "f"]
    assert floats and all(isinstance(a, jax.Array) and a.dtype == np.float64 for a in floats)
    for got, want in zip(_outputs(loaded, _rows(X)), _outputs(est, _rows(X)), strict=True):
        np.testing.assert_array_equal(got, want)
    pd.testing.assert_frame_equal(loaded.memberships_, est.memberships_)
    pd.testing.assert_frame_equal(loaded.mean_processes_, est.mean_processes_)
    for key, value in est.hyperparameters_.items():
        np.testing.assert_array_equal(loaded.hyperparameters_[key], value)


def test_skops_round_trip_inside_a_pipeline(data, tmp_path):
    X, y = data
    scale = ColumnTransformer(
        [("scale", StandardScaler(), ["x"])],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = Pipeline(
            [("scale", scale), ("magma", MagmaClusterRegressor(n_clusters=2, max_iter=3))]
        ).fit(X, y)
    sio.dump(pipe, tmp_path / "pipe.skops")
    assert sio.get_untrusted_types(file=tmp_path / "pipe.skops") == [ESTIMATOR]
    loaded = sio.load(tmp_path / "pipe.skops", trusted=[ESTIMATOR])
    for got, want in zip(
        loaded.predict(X, return_std=True), pipe.predict(X, return_std=True), strict=True
    ):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------- versions


def _saved_as(monkeypatch, est, version: str, fmt: int = FORMAT) -> bytes:
    """Bytes of ``est`` pickled as if by mimosa_sklearn ``version`` in format ``fmt``."""
    with monkeypatch.context() as m:
        m.setattr(_persistence, "_package_version", lambda: version)
        m.setattr(_persistence, "FORMAT", fmt)
        return pickle.dumps(est)


@pytest.fixture(scope="module")
def fitted(data):
    return _fit(*data)


def test_newer_format_is_refused_with_both_versions(monkeypatch, fitted, tmp_path):
    blob = _saved_as(monkeypatch, fitted, "0.9.0", FORMAT + 1)
    with pytest.raises(pickle.UnpicklingError) as info:
        pickle.loads(blob)
    message = str(info.value)
    assert f"saved by mimosa_sklearn 0.9.0 in persistence format {FORMAT + 1}" in message
    assert f"mimosa_sklearn {mimosa_sklearn.__version__} reads persistence format " in message
    assert "Upgrade mimosa_sklearn to 0.9.0 or later" in message
    (tmp_path / "new.joblib").write_bytes(blob)
    with pytest.raises(pickle.UnpicklingError, match="persistence format"):
        joblib.load(tmp_path / "new.joblib")


def test_newer_format_is_refused_by_skops(monkeypatch, fitted):
    with monkeypatch.context() as m:
        m.setattr(_persistence, "FORMAT", FORMAT + 1)
        blob = sio.dumps(fitted)
    with pytest.raises(pickle.UnpicklingError, match=f"persistence format {FORMAT + 1}"):
        sio.loads(blob, trusted=[ESTIMATOR])


def test_pickle_from_before_formats_is_refused(fitted):
    state = fitted.__getstate__()
    del state["_mimosa_format"]
    est = MagmaClusterRegressor.__new__(MagmaClusterRegressor)
    with pytest.raises(pickle.UnpicklingError) as info:
        est.__setstate__(state)
    message = str(info.value)
    assert "in no persistence format (a pickle from before format 1)" in message
    assert "Load it with the mimosa_sklearn that saved it, or refit the model" in message


def test_pickle_from_incompatible_version_names_both(monkeypatch, fitted):
    blob = _saved_as(monkeypatch, fitted, "99.1.0")
    with pytest.raises(pickle.UnpicklingError) as info:
        pickle.loads(blob)
    message = str(info.value)
    assert "99.1.0" in message and mimosa_sklearn.__version__ in message


def test_pickle_from_compatible_version_loads(monkeypatch, fitted, data):
    major, minor = mimosa_sklearn.__version__.split(".")[:2]
    blob = _saved_as(monkeypatch, fitted, f"{major}.{minor}.999")
    X, _ = data
    np.testing.assert_array_equal(pickle.loads(blob).predict(X), fitted.predict(X))


@pytest.mark.parametrize(
    ("current", "saved", "loads"),
    [
        ("0.2.0", "0.2.0", True),
        ("0.2.0", "0.2.17", True),
        ("0.2.0", "0.3.0", False),
        ("0.2.0", "0.1.9", False),
        ("0.2.0", "1.2.0", False),
        ("1.4.0", "1.0.3", True),
        ("1.4.0", "1.9.0rc1", True),
        ("1.4.0", "2.4.0", False),
        ("1.4.0", "0.4.0", False),
        ("0.2.0", None, True),  # a state without a package version
    ],
)
def test_version_rule(monkeypatch, current, saved, loads):
    monkeypatch.setattr(_persistence, "_package_version", lambda: current)
    state = {"n_clusters": 3, "_mimosa_format": FORMAT}
    if saved is not None:
        state["_mimosa_version"] = saved
    if loads:
        assert unpack_state(state, "Owner") == {"n_clusters": 3}
        return
    with pytest.raises(pickle.UnpicklingError) as info:
        unpack_state(state, "Owner")
    message = str(info.value)
    assert f"This Owner was saved with mimosa_sklearn {saved} " in message
    assert f"cannot be loaded with mimosa_sklearn {current} " in message
    assert f"mimosa_sklearn=={saved}" in message


def test_pack_state_leaves_the_callers_dict_alone():
    with runtime.jax_scope():
        kernel = kernax.SEKernel(1.5)
    names = ["a", "b"]
    state = {"mean_kernel": kernel, "names": names, "n_clusters": 2}
    before = dict(state)
    packed = pack_state(state)
    assert state == before and state["mean_kernel"] is kernel
    assert packed["_mimosa_format"] == FORMAT
    assert packed["_mimosa_version"] == mimosa_sklearn.__version__
    assert _non_plain(packed) == [] and packed["names"] == names
    restored = unpack_state(pickle.loads(pickle.dumps(packed)), "Owner")
    assert set(restored) == set(state)  # the versions are popped
    assert type(restored["mean_kernel"]) is kernax.SEKernel
    assert float(restored["mean_kernel"].length_scale) == 1.5
