"""The core's jit: compile options (in use on this jaxlib, same results, safe fallback)
and the disk cache of compiled programs (same results, damaged or foreign entries
rebuilt, nothing outside the package or with the cache off written)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import core_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import cache, em, program_key
from mimosa_sklearn.core import compile as core_compile


def _run(tasks, params, tau0):
    return em.run_em(
        params, jnp.asarray(tau0), ref.to_batch(tasks), max_iter=4, tol=0.0, max_steps=20
    )


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the options concern the CPU backend only"
)
def test_em_with_the_compile_options_equals_xla_defaults(monkeypatch):
    rng = np.random.default_rng(11)
    t = 6
    offsets = np.where(np.arange(t) % 2 == 0, -2.0, 2.0)
    grid = np.linspace(0.0, 9.0, 12)[:, None]
    tasks = ref.make_tasks(rng, t, 7, grid, 3, 7, n_outputs=1, hole_prob=0.2, offsets=offsets)
    params, _ = ref.random_params(rng, SharingLayout.from_flags(t, 2, 1))
    tau0 = np.where((np.arange(t) % 2 == 0)[:, None], [0.8, 0.2], [0.2, 0.8])
    tuned = _run(tasks, params, tau0)
    # Compiled with the options: a jaxlib that rejected them would have switched off.
    assert core_compile.options_in_use()
    monkeypatch.setitem(core_compile._state, "tuned", False)
    plain = _run(tasks, params, tau0)
    np.testing.assert_allclose(tuned.elbo_history, plain.elbo_history, rtol=1e-11)
    np.testing.assert_allclose(tuned.tau, plain.tau, rtol=1e-9, atol=1e-12)
    for a, b in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9)


def test_an_option_the_jaxlib_does_not_know_falls_back_to_xla_defaults(monkeypatch):
    monkeypatch.setitem(core_compile._state, "tuned", True)
    monkeypatch.setattr(core_compile, "COMPILER_OPTIONS", {"xla_cpu_no_such_option": True})
    double = core_compile.jit(lambda x: 2 * x + 1)
    np.testing.assert_array_equal(np.asarray(double(jnp.arange(3.0))), [1.0, 3.0, 5.0])
    assert not core_compile.options_in_use()
    # Other compile errors are not swallowed.
    monkeypatch.setitem(core_compile._state, "tuned", True)
    with pytest.raises(TypeError):
        core_compile.jit(lambda x: x @ x)(jnp.ones((2, 3)))


def test_host_values_reach_the_device_without_compiling(caplog):
    # jnp.asarray compiles a staging program per new shape; a fit used to compile a
    # dozen of them before its EM iteration.
    from padded_tasks import from_nan

    from mimosa_sklearn._batching import make_batch

    rng = np.random.default_rng(3)
    x = rng.uniform(size=(5, 7, 1))
    x[0, 5:] = np.nan
    y = np.where(np.isnan(x), np.nan, np.sin(x))
    grid = np.unique(x[~np.isnan(x)])[:, None]
    mappings = np.searchsorted(grid[:, 0], np.nan_to_num(x[..., 0]))
    tasks = from_nan(x, y, mappings)
    with jax.log_compiles(True), caplog.at_level("WARNING", logger="jax"):
        batch = make_batch(tasks, grid)
        scalar, flag = core_compile.to_device(1e-6), core_compile.to_device(True)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    assert batch.x.dtype == jnp.float64 and batch.mappings.dtype == jnp.int32
    assert batch.mask.dtype == jnp.bool_
    # Python scalars keep jnp.asarray's weak type, so both hit the same compiled code.
    assert scalar.weak_type == jnp.asarray(1e-6).weak_type and scalar.dtype == jnp.float64
    assert flag.dtype == jnp.bool_ and flag.weak_type == jnp.asarray(True).weak_type


def test_the_options_are_only_passed_on_the_cpu_backend(monkeypatch):
    monkeypatch.setitem(core_compile._state, "tuned", True)
    monkeypatch.setattr(core_compile, "COMPILER_OPTIONS", {"xla_cpu_no_such_option": True})
    monkeypatch.setattr(core_compile.jax, "default_backend", lambda: "gpu")
    assert not core_compile.options_in_use()
    triple = core_compile.jit(lambda x: 3 * x)
    np.testing.assert_array_equal(np.asarray(triple(jnp.arange(3.0))), [0.0, 3.0, 6.0])
    # The bad option never reached the compiler, so nothing fell back.
    assert core_compile._state["tuned"]


# ---------------------------------------------------------------------- the disk cache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty cache folder, and no program of this process compiled yet."""
    monkeypatch.setenv(cache.DIR_ENV, str(tmp_path))
    core_compile.forget_compiled()
    yield tmp_path / f"programs-v{cache.FORMAT}"
    core_compile.forget_compiled()


def _small_em():
    rng = np.random.default_rng(5)
    t = 4
    grid = np.linspace(0.0, 5.0, 6)[:, None]
    tasks = ref.make_tasks(rng, t, 5, grid, 3, 5, n_outputs=1, hole_prob=0.0)
    params, _ = ref.random_params(rng, SharingLayout.from_flags(t, 2, 1))
    tau0 = np.tile([0.7, 0.3], (t, 1))
    return lambda: _run(tasks, params, tau0)


def _assert_same(a, b):
    # EMResults, bit for bit.
    a, b = ([getattr(r, f.name) for f in dataclasses.fields(r)] for r in (a, b))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _loaded(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Loaded")]


def test_a_program_from_the_cache_gives_the_same_results(cache_dir, caplog, monkeypatch):
    run = _small_em()
    monkeypatch.setenv(cache.DIR_ENV, "")
    off = run()
    monkeypatch.setenv(cache.DIR_ENV, str(cache_dir.parent))
    core_compile.forget_compiled()
    with caplog.at_level("DEBUG", logger=core_compile.__name__):
        missed = run()
        assert not _loaded(caplog)
        entries = sorted(cache_dir.iterdir())
        assert entries
        core_compile.forget_compiled()
        hit = run()
    assert any("em_iteration" in m for m in _loaded(caplog))
    assert sorted(cache_dir.iterdir()) == entries  # nothing compiled and written again
    _assert_same(missed, off)
    _assert_same(hit, off)


@pytest.mark.parametrize("damage", ["truncated file", "garbage payload"])
def test_a_damaged_entry_is_ignored_and_rebuilt(cache_dir, caplog, damage):
    run = _small_em()
    expected = run()
    for path in cache_dir.iterdir():
        if damage == "truncated file":
            path.write_bytes(path.read_bytes()[:-100])
        else:  # a whole file whose content is no program
            cache.write(path.stem, b"garbage")
    core_compile.forget_compiled()
    with caplog.at_level("DEBUG", logger=core_compile.__name__):
        again = run()
    assert not _loaded(caplog)
    _assert_same(again, expected)
    # Rebuilt: the next process loads them.
    core_compile.forget_compiled()
    with caplog.at_level("DEBUG", logger=core_compile.__name__):
        _assert_same(run(), expected)
    assert _loaded(caplog)


def test_an_entry_of_another_environment_is_not_used(cache_dir, caplog, monkeypatch):
    run = _small_em()
    # As written by another jax version.
    monkeypatch.setitem(program_key._VERSIONED, "jax", "0.0.0")
    program_key.environment.cache_clear()
    run()
    written = set(cache_dir.iterdir())
    monkeypatch.undo()
    monkeypatch.setenv(cache.DIR_ENV, str(cache_dir.parent))
    program_key.environment.cache_clear()
    core_compile.forget_compiled()
    with caplog.at_level("DEBUG", logger=core_compile.__name__):
        run()
    assert not _loaded(caplog)
    assert len(set(cache_dir.iterdir()) - written) == len(written)


def test_functions_outside_the_package_never_reach_the_disk(cache_dir):
    double = core_compile.jit(lambda x: 2 * x)
    np.testing.assert_array_equal(np.asarray(double(jnp.arange(3.0))), [0.0, 2.0, 4.0])
    assert not cache_dir.exists()


def test_calls_under_transformations_and_disable_jit():
    double = core_compile.jit(lambda x, k: k * x)
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda y: double(y, 2))(x)), 2 * x)
    np.testing.assert_array_equal(np.asarray(jax.vmap(lambda y: double(y, 3))(x)), 3 * x)
    with jax.disable_jit():
        np.testing.assert_array_equal(np.asarray(double(x, 4)), 4 * x)
    # numpy and JAX arrays share one compiled program.
    np.testing.assert_array_equal(np.asarray(double(np.arange(3.0), 5)), 5 * x)


def test_the_users_jax_config_is_left_alone(cache_dir, monkeypatch):
    from estimator_data import fit, subset

    def snapshot():
        return {k: repr(v) for k, v in jax.config.values.items()}

    X, y = subset("train", 6)
    before = snapshot()
    fitted = fit(X, y)
    fitted.predict(X)
    assert snapshot() == before
    assert any(cache_dir.iterdir())

    def broken_disk(key, payload):
        raise RuntimeError("broken disk")

    monkeypatch.setattr(cache, "write", broken_disk)
    shutil.rmtree(cache_dir)
    core_compile.forget_compiled()
    with pytest.raises(RuntimeError, match="broken disk"):
        fit(X, y)
    assert snapshot() == before


# Records in a new process which programs JAX compiled (``compiled``) and how many of
# the package's programs were loaded from the cache (``loaded``).
_COUNTING = textwrap.dedent(
    """
    import logging
    from jax._src import monitoring

    compiled = []
    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kw.get("fun_name", ""))
    monitoring.register_event_duration_secs_listener(on_duration)
    loaded = []
    class Loads(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Loaded"):
                loaded.append(record.getMessage())
    log = logging.getLogger("mimosa_sklearn.core.compile")
    log.setLevel(logging.DEBUG)
    log.addHandler(Loads())
    """
)

# A fit, condition and predict on synth_dev in a new process: prints how many of the
# package's programs were loaded and which were compiled; saves the predictions.
_SNIPPET_FIT = _COUNTING + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, "tests")
    from estimator_data import fit, subset

    X, y = subset("train", 12)
    X_obs, y_obs = subset("test_observed", 4)
    X_new, _ = subset("test_target", 4)
    model = fit(X, y).condition(X_obs, y_obs)
    mean, std = model.predict(X_new, return_std=True)
    np.save(sys.argv[1], np.stack([mean, std]))
    print(json.dumps({"loaded": len(loaded), "compiled": compiled}))
    """
)
_PACKAGE_PROGRAMS = ("em_iteration", "squarem_point", "predict_new_tasks", "new_task_memberships")


def _in_new_processes(
    snippet: str, argvs: list[list[str]], cache_value: str, timeout: float = 600
) -> list[dict]:
    """Run ``snippet`` in one new process per argument list, all at once, with the
    cache folder ``cache_value``; the JSON each printed last."""
    root = Path(core_compile.__file__).parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), **{cache.DIR_ENV: cache_value})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", snippet, *argv],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def _fit_in_new_processes(tmp_path, cache_value: str, n: int = 1) -> list[tuple[np.ndarray, dict]]:
    outs = [tmp_path / f"out-{i}-{os.urandom(4).hex()}.npy" for i in range(n)]
    counts = _in_new_processes(_SNIPPET_FIT, [[str(out)] for out in outs], cache_value)
    return [(np.load(out), c) for out, c in zip(outs, counts, strict=True)]


# Two processes need the same program at the same moment (both pass a barrier first):
# prints whether this one compiled it or loaded it from the other's entry.
_SNIPPET_RACE = _COUNTING + textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, "tests/core")
    from mimosa_sklearn.core import runtime
    runtime.ensure_safe_cpu_backend()
    import jax.numpy as jnp
    import numpy as np
    import core_reference as ref
    from mimosa_sklearn._kernels import SharingLayout
    from mimosa_sklearn.core import predict

    barrier, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with runtime.jax_scope():
        params, _ = ref.random_params(np.random.default_rng(0), SharingLayout.from_flags(5, 2, 1))
        real = jnp.asarray(np.arange(5) < 4)
        (barrier / me).touch()
        while len(list(barrier.iterdir())) < n:
            time.sleep(0.001)
        out = predict.typical_task_params(params, real, 3)
    print(json.dumps({
        "compiled": sum("typical_task_params" in c for c in compiled),
        "loaded": len(loaded),
    }))
    """
)


def test_processes_missing_the_same_program_at_once_compile_it_once(tmp_path):
    """The second process waits for the first one's compilation (the entry's build
    lock), then loads its entry: a GridSearchCV with n_jobs=2 compiles each program
    once. Without the lock both compile (they pass a barrier together)."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    argvs = [[str(barrier), str(i), "2"] for i in range(2)]
    counts = _in_new_processes(_SNIPPET_RACE, argvs, str(tmp_path / "cache"), timeout=300)
    assert sorted((c["compiled"], c["loaded"]) for c in counts) == [(0, 1), (1, 0)]
    # The lock file went with the build.
    assert not list((tmp_path / "cache").rglob("*.lock"))


@pytest.mark.slow
def test_new_processes_share_the_cache_and_get_the_same_results(tmp_path):
    folder = tmp_path / "cache"
    # Two processes compile and write the same entries at once (one may also load
    # what the other wrote first).
    first = _fit_in_new_processes(tmp_path, str(folder), n=2)
    assert any("em_iteration" in name for _, counts in first for name in counts["compiled"])
    (hit, counts), (off, _) = (
        _fit_in_new_processes(tmp_path, str(folder))[0],
        _fit_in_new_processes(tmp_path, "")[0],
    )
    # The next process loads every program of the package instead of compiling it.
    assert counts["loaded"] >= len(_PACKAGE_PROGRAMS)
    assert not [n for n in counts["compiled"] if any(p in n for p in _PACKAGE_PROGRAMS)]
    for predictions, _ in first:
        np.testing.assert_array_equal(predictions, off)
    np.testing.assert_array_equal(hit, off)
