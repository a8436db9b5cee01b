"""Pickling and version checks (``mimosa_sklearn._persistence``).

Proven: :func:`pack_state` / :func:`unpack_state` carry equinox modules (which stdlib
pickle rejects) and plain values through a stdlib pickle unchanged, without touching
the caller's dict; the version rule (same major from 1.0 on, same minor before) on a
table of versions, and a fitted estimator pickled by another version is refused (or
loaded, when compatible) with a message naming both; :func:`to_host` gives numpy
arrays and :func:`to_device_tree` float64 JAX arrays while JAX's global x64 flag is
off, leaving that flag off.
"""

from __future__ import annotations

import pickle
import warnings

import jax
import jax.numpy as jnp
import joblib
import kernax
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

import mimosa_sklearn
from mimosa_sklearn import MagmaClusterRegressor, _persistence
from mimosa_sklearn._persistence import pack_state, to_device_tree, to_host, unpack_state
from mimosa_sklearn.core import runtime

runtime.ensure_safe_cpu_backend()  # before this module's own JAX arrays


@pytest.fixture(scope="module")
def data():
    """Four tasks of five rows in two groups (offsets -2 / +2)."""
    rng = np.random.default_rng(0)
    x = np.tile(np.linspace(0.0, 4.0, 5), 4)
    codes = np.repeat(np.arange(4), 5)
    y = np.sin(x) + np.where(codes % 2, 2.0, -2.0) + rng.normal(scale=0.1, size=x.size)
    return pd.DataFrame({"ID": [f"t{c}" for c in codes], "x": x}), y


@pytest.fixture(scope="module")
def fitted(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(n_clusters=2, max_iter=3, random_state=0).fit(*data)


# ---------------------------------------------------------------------- estimator pickles


def _pickled_as(monkeypatch, est, version: str) -> bytes:
    """Bytes of ``est`` pickled as if by mimosa_sklearn ``version``."""
    with monkeypatch.context() as m:
        m.setattr("mimosa_sklearn._persistence._package_version", lambda: version)
        return pickle.dumps(est)


def test_pickle_from_incompatible_version_names_both(monkeypatch, fitted, tmp_path):
    blob = _pickled_as(monkeypatch, fitted, "99.1.0")
    with pytest.raises(pickle.UnpicklingError) as info:
        pickle.loads(blob)
    message = str(info.value)
    assert "99.1.0" in message and mimosa_sklearn.__version__ in message
    (tmp_path / "old.joblib").write_bytes(blob)
    with pytest.raises(pickle.UnpicklingError, match=r"99\.1\.0"):
        joblib.load(tmp_path / "old.joblib")


def test_pickle_from_compatible_version_loads(monkeypatch, fitted, data):
    major, minor = mimosa_sklearn.__version__.split(".")[:2]
    blob = _pickled_as(monkeypatch, fitted, f"{major}.{minor}.999")
    X, _ = data
    np.testing.assert_array_equal(pickle.loads(blob).predict(X), fitted.predict(X))


def test_pickle_from_incompatible_version():
    state = MagmaClusterRegressor().__getstate__()
    state["_mimosa_version"] = "99.0.0"
    est = MagmaClusterRegressor.__new__(MagmaClusterRegressor)
    with pytest.raises(pickle.UnpicklingError, match=r"99\.0\.0.*cannot be loaded"):
        est.__setstate__(state)


# ---------------------------------------------------------------------- pack / unpack


def _kernel(scale: float):
    with runtime.jax_scope():
        return kernax.SEKernel(scale)


def _gram(kernel) -> np.ndarray:
    with runtime.jax_scope():
        x = jnp.asarray(np.linspace(0.0, 3.0, 4)[:, None])
        return np.asarray(kernel(x, x))


def test_pack_and_unpack_state_round_trip():
    model, inner = _kernel(1.5), _kernel(0.7)
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(model)  # kernax kernels hold functions stdlib pickle cannot find
    names, values = ["a", "b"], np.arange(4.0)
    lookalike = ("__cloudpickled__", "not bytes")  # a user tuple, not a packed module
    state = {
        "model_": model,
        "_contexts": {"new": (inner, np.ones(2))},  # modules deep inside a container
        "n_clusters": 2,
        "names": names,
        "values": values,
        "pair": lookalike,
    }
    before = dict(state)
    packed = pack_state(state)
    assert state == before and "_mimosa_version" not in state  # the caller's dict
    assert packed["_mimosa_version"] == mimosa_sklearn.__version__
    for key in ("model_", "_contexts"):
        assert packed[key][0] == "__cloudpickled__" and isinstance(packed[key][1], bytes)
    assert packed["names"] is names and packed["values"] is values
    assert packed["pair"] is lookalike

    restored = unpack_state(pickle.loads(pickle.dumps(packed)), "Owner")
    assert set(restored) == set(state)  # the version is popped
    assert type(restored["model_"]) is type(model)
    np.testing.assert_array_equal(_gram(restored["model_"]), _gram(model))
    inner_back, ones = restored["_contexts"]["new"]
    # Inside a container the module travels as it is (contexts hold numpy leaves): a
    # JAX leaf may come back in float32 outside float64 scopes.
    np.testing.assert_allclose(_gram(inner_back), _gram(inner), rtol=1e-6)
    assert np.abs(_gram(inner_back) - _gram(model)).max() > 0.1  # each its own kernel
    np.testing.assert_array_equal(ones, np.ones(2))
    assert restored["n_clusters"] == 2 and restored["names"] == names
    np.testing.assert_array_equal(restored["values"], values)
    assert restored["pair"] == lookalike
    # Nothing to hide: no conditioned task yet stays an empty dict.
    assert pack_state({"_contexts": {}})["_contexts"] == {}


def test_unpacked_modules_keep_float64_leaves():
    # E.g. a user kernel built in float64 passed as mean_kernel=, the estimator pickled and
    # loaded in a process with JAX's default x64 off: a refit then starts from rounded
    # hyperparameters.
    model = _kernel(1.3)
    packed = pickle.dumps(pack_state({"mean_kernel": model}))
    with jax.enable_x64(False):
        restored = unpack_state(pickle.loads(packed), "Owner")["mean_kernel"]
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(model), strict=True):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


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
        ("0.2.0", None, True),  # a pickle without a version
    ],
)
def test_version_rule(monkeypatch, current, saved, loads):
    monkeypatch.setattr(_persistence, "_package_version", lambda: current)
    state = {"n_clusters": 3}
    if saved is not None:
        state["_mimosa_version"] = saved
    if loads:
        assert unpack_state(state, "Owner") == {"n_clusters": 3}
        return
    with pytest.raises(pickle.UnpicklingError) as info:
        unpack_state(state, "Owner")
    message = str(info.value)
    assert f"This Owner was pickled with mimosa_sklearn {saved} " in message
    assert f"cannot be loaded with mimosa_sklearn {current} " in message
    assert f"mimosa_sklearn=={saved}" in message


# ---------------------------------------------------------------------- host / device


def test_to_host_and_back_to_the_device():
    with runtime.jax_scope():
        tree = {
            "f": jnp.asarray([0.1, 1.0 + 2.0**-40]),
            "i": jnp.arange(3, dtype=jnp.int32),
            "b": jnp.asarray([True, False]),
            "module": kernax.SEKernel(1.5),  # an equinox module with a float64 leaf
            "host": np.arange(2.0),
            "label": "text",
            "count": 3,
        }
    host = to_host(tree)
    for key in ("f", "i", "b"):
        assert type(host[key]) is np.ndarray and host[key].dtype == tree[key].dtype
        np.testing.assert_array_equal(host[key], np.asarray(tree[key]))
    (leaf,) = jax.tree.leaves(host["module"])
    assert type(leaf) is np.ndarray and leaf.dtype == np.float64
    assert host["host"] is tree["host"] and host["label"] == "text" and host["count"] == 3

    with jax.enable_x64(False):
        assert not jax.config.jax_enable_x64  # JAX's default: float32
        back = to_device_tree(host)
        assert not jax.config.jax_enable_x64  # and the global flag stays so
    for key in ("f", "i", "b", "host"):
        assert isinstance(back[key], jax.Array) and back[key].dtype == host[key].dtype
        np.testing.assert_array_equal(np.asarray(back[key]), host[key])
    assert back["f"].dtype == np.float64 and back["host"].dtype == np.float64
    assert float(back["f"][1]) == 1.0 + 2.0**-40  # lost in float32
    (leaf_back,) = jax.tree.leaves(back["module"])
    assert isinstance(leaf_back, jax.Array) and leaf_back.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(leaf_back), leaf)
    np.testing.assert_array_equal(_gram(back["module"]), _gram(tree["module"]))
    assert back["label"] == "text" and back["count"] == 3
