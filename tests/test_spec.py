"""Modules and the package's objects as plain data (``mimosa_sklearn._spec``).

Proven: every kernel family the package builds or accepts (SE, ARD, Matern, periodic,
dot-product kernels with static degrees and parametrisations, sums, products, active
dimensions, ICM and LCM inside our stacked-output wrapper, constant and per-output
means, stacked ``Params``) comes back from :func:`encode` then stdlib pickle then
:func:`decode` with the same class, tree structure, static fields (the very jitted
distance functions and engine classes), leaf dtypes and values, and the same Gram
matrices; the encoded data hold only plain values; JAX arrays come back float64 while
JAX's x64 flag is off, which stays off, and numpy arrays stay numpy; dicts of any keys,
the package's own dataclasses and a user's kernel class (saved by reference) round
trip; what could not be loaded again is refused when saving, and a state naming
classes or functions outside kernax and mimosa_sklearn, objects defined elsewhere,
undeclared or dunder attributes, or unknown kinds is refused when loading.
"""

from __future__ import annotations

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest
from padded_tasks import from_nan
from user_kernels import UserSEKernel, squared_distances

from mimosa_sklearn._kernels import (
    SharingLayout,
    build_params,
    correlated_kernel,
    correlated_prior_mean,
    default_kernel,
)
from mimosa_sklearn._spec import TAG, decode, encode
from mimosa_sklearn.core import runtime

runtime.ensure_safe_cpu_backend()  # before this module's own JAX arrays

X = np.linspace(0.0, 3.0, 5)[:, None]
PLAIN = (str, int, float, bool, type(None), np.ndarray, np.generic)


def _families() -> dict[str, object]:
    """Kernels and means as users and the package build them (float64 leaves)."""
    with runtime.jax_scope():
        return {
            "se": kernax.SEKernel(1.5),
            "ard": default_kernel(2.0, np.array([0.5, 1.5]), 2),
            "matern_sum": kernax.Matern52Kernel(0.7) + kernax.Matern12Kernel(1.1),
            "variance_product": kernax.VarianceKernel(2.0) * kernax.Matern32Kernel(1.0),
            "periodic": kernax.PeriodicKernel(1.0, 2.0),
            "rational_quadratic": kernax.RationalQuadraticKernel(1.0, 0.5),
            "polynomial": kernax.PolynomialKernel(3, 0.5, 1.0),
            "sigmoid": kernax.SigmoidKernel(0.5, 1.0),
            "linear_active_dims": kernax.ActiveDimsModule(kernax.LinearKernel(0.3), (0,)),
            "icm": correlated_kernel(None, np.array([1.0, 2.0]), 0.8, 1),
            "lcm": correlated_kernel(
                kernax.LCMKernel(
                    [kernax.SEKernel(1.0), kernax.Matern52Kernel(2.0)],
                    [np.eye(2), np.ones((2, 2))],
                ),
                np.ones(2),
                1.0,
                1,
            ),
            "constant_mean": kernax.ConstantMean(0.3),
            "per_output_mean": correlated_prior_mean(None, 2),
        }


def _assert_same_tree(got, want) -> None:
    assert type(got) is type(want)
    # Static fields are part of the structure: the distance functions and engine
    # classes are the very objects (jitted functions compare by identity).
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _plain_leaves(data):
    """Leaves of encoded data that are not plain values."""
    if isinstance(data, dict):
        return [x for v in data.values() for x in _plain_leaves(v)] + [
            k for k in data if not isinstance(k, str)
        ]
    if type(data) in (list, tuple):
        return [x for v in data for x in _plain_leaves(v)]
    return [] if isinstance(data, PLAIN) else [data]


def _pickled(value):
    return decode(pickle.loads(pickle.dumps(encode(value))))


# ---------------------------------------------------------------------- kernel families


@pytest.mark.parametrize("name", list(_families()))
def test_kernel_families_round_trip_bit_identically(name):
    module = _families()[name]
    data = encode(module)
    assert _plain_leaves(data) == []
    back = _pickled(module)
    _assert_same_tree(back, module)
    with runtime.jax_scope():
        x = jnp.asarray(np.hstack([X, np.tile([0.0, 1.0], 3)[:5, None]]))
        if name.endswith("mean"):
            np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(module(x)))
        else:
            np.testing.assert_array_equal(np.asarray(back(x, x)), np.asarray(module(x, x)))


def test_static_fields_are_the_objects_defined_in_kernax():
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(kernax.SEKernel(1.0))  # what the codec is for
    kernel = _pickled(kernax.VarianceKernel(2.0) * kernax.Matern52Kernel(1.0))
    assert kernel.right.distance_function is kernax.distances.euclidean_distance
    assert kernel.right.engine is kernax.engines.DenseEngine
    assert kernel.left.engine is kernax.engines.DenseEngine
    poly = _pickled(kernax.PolynomialKernel(3, 0.5, 1.0))
    assert poly.degree == 3 and type(poly.degree) is int
    data = encode(kernax.SEKernel(1.0))
    fields = data["fields"]
    assert data["class"] == "kernax.stationary.SEKernel:SEKernel"
    assert fields["distance_function"] == {
        TAG: "ref",
        "ref": "kernax.distances:squared_euclidean_distance",
    }
    assert set(fields) == {f.name for f in dataclasses.fields(kernax.SEKernel)}


def test_stacked_params_round_trip():
    layout = SharingLayout(mean=(2, 1), prior=(2, 1), task=(3, 1, 1))
    with runtime.jax_scope():
        params = build_params(
            layout,
            default_kernel(1.0, 0.5, 1),
            kernax.ConstantMean(0.0),
            default_kernel(0.2, 0.3, 1),
            np.array([0.1, 0.2, 0.3])[:, None, None],
            prior_values=np.array([[-1.0], [1.0]]),
        )
    _assert_same_tree(_pickled(params), params)


# ---------------------------------------------------------------------- arrays


def test_arrays_keep_their_dtype_and_place_with_x64_off():
    with runtime.jax_scope():
        value = {
            "f64": jnp.asarray([0.1, 1.0 + 2.0**-40]),
            "i32": jnp.arange(3, dtype=jnp.int32),
            "bool": jnp.asarray([True, False]),
        }
    value["f32"] = jnp.asarray([0.5, 1.5], dtype=jnp.float32)
    value["host"] = np.arange(3.0)
    data = encode(value)
    assert all(type(data[k]["array"]) is np.ndarray for k in ("f64", "i32", "bool", "f32"))
    with jax.enable_x64(False):
        assert not jax.config.jax_enable_x64
        back = decode(pickle.loads(pickle.dumps(data)))
        assert not jax.config.jax_enable_x64  # the user's flag is left alone
    for key in ("f64", "i32", "bool", "f32"):
        assert isinstance(back[key], jax.Array) and back[key].dtype == value[key].dtype
        np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(value[key]))
    assert float(back["f64"][1]) == 1.0 + 2.0**-40  # lost in float32
    assert type(back["host"]) is np.ndarray  # numpy arrays stay on the host


def test_module_leaves_come_back_float64_with_x64_off():
    with runtime.jax_scope():
        kernel = kernax.SEKernel(1.3)
    data = pickle.dumps(encode(kernel))
    with jax.enable_x64(False):
        back = decode(pickle.loads(data))
    (leaf,) = jax.tree.leaves(back)
    assert leaf.dtype == np.float64 and float(leaf) == float(jax.tree.leaves(kernel)[0])


# ---------------------------------------------------------------------- containers, objects


def test_containers_and_own_objects_round_trip():
    tasks = from_nan(np.array([[[0.0], [1.0], [np.nan]]]), np.array([[[1.0], [2.0], [np.nan]]]))
    state = np.random.RandomState(3)
    value = {
        "ids": {"a": 1, 2: "b", (3, 4): [5.0]},  # task ids of any hashable type
        TAG: "a user's key that looks like a tag",
        "nested": [(1, "x"), [np.float64(2.5), None]],
        "tasks": tasks,
        "layout": SharingLayout(mean=(1, 1), prior=(2, 1), task=(1, 1, 1)),
        "random_state": state,
    }
    data = encode(value)
    assert data[TAG] == "dict"  # the tag key forces the explicit form
    back = _pickled(value)
    assert back["ids"] == value["ids"] and back[TAG] == value[TAG]
    assert back["nested"] == [(1, "x"), [2.5, None]]
    assert type(back["nested"][0]) is tuple and type(back["nested"][1]) is list
    assert type(back["tasks"]) is type(tasks) and back["tasks"].n_tasks == 1
    for name in ("x", "rows", "y", "observed"):
        np.testing.assert_array_equal(getattr(back["tasks"], name), getattr(tasks, name))
    assert back["layout"] == value["layout"]
    assert back["random_state"].randint(1000) == state.randint(1000)


def test_a_user_kernel_class_is_saved_by_reference():
    kernel = UserSEKernel(2.0, 0.5)
    data = encode(kernel)
    assert data["class"] is UserSEKernel  # pickle stores it by reference, skops lists it
    assert data["fields"]["distances"] == {TAG: "ref", "ref": squared_distances}
    back = _pickled(kernel)
    _assert_same_tree(back, kernel)
    assert back.distances is squared_distances


# ---------------------------------------------------------------------- refusals


def test_saving_refuses_what_could_not_be_loaded():
    with pytest.raises(pickle.PicklingError, match="not found at its import path"):
        encode(kernax.SEKernel(1.0, distance_function=lambda a, b: a - b))
    jitted = jax.jit(squared_distances)  # not the object stored at its import path
    with pytest.raises(pickle.PicklingError, match="not found at its import path"):
        encode(UserSEKernel(1.0, 1.0, distances=jitted))


def test_saving_refuses_a_jitted_function_of_another_package(monkeypatch):
    import user_kernels

    jitted = jax.jit(squared_distances)
    monkeypatch.setattr(user_kernels, "squared_distances", jitted)
    with pytest.raises(pickle.PicklingError, match="only classes and plain functions"):
        encode(UserSEKernel(1.0, 1.0, distances=jitted))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({TAG: "ref", "ref": "os:system"}, r"Refusing to load 'os:system'.*outside"),
        ({TAG: "ref", "ref": "subprocess.Popen"}, r"Refusing to load 'subprocess\.Popen'"),
        ({TAG: "object", "class": "builtins:dict", "fields": {}}, "outside"),
        # kernax.distances imports jax.numpy as jnp: reachable, but not defined there.
        ({TAG: "ref", "ref": "kernax.distances:jnp.exp"}, "defined elsewhere"),
        ({TAG: "ref", "ref": "kernax.means:ConstantMean"}, "defined elsewhere"),  # re-export
        ({TAG: "ref", "ref": "kernax.distances:no_such_thing"}, "does not exist"),
        ({TAG: "ref", "ref": 3}, "not a class, a function or an import path"),
        (
            {TAG: "object", "class": "kernax.distances:euclidean_distance", "fields": {}},
            "not an equinox module nor a class of mimosa_sklearn",
        ),
        (
            {
                TAG: "object",
                "class": "kernax.means.ConstantMean:ConstantMean",
                "fields": {"__class__": 1},
            },
            "not an attribute name",
        ),
        (
            {
                TAG: "object",
                "class": "kernax.means.ConstantMean:ConstantMean",
                "fields": {"shape": 1},
            },
            "not a field of ConstantMean",
        ),
        ({TAG: "future kind"}, "saved by another version"),
    ],
)
def test_loading_refuses_what_it_does_not_vouch_for(data, message):
    with pytest.raises(pickle.UnpicklingError, match=message):
        decode(data)
