"""Chunked maps over tasks and task sharding (:mod:`mimosa_sklearn.core.parallel`).

``tests/test_fast_paths.py`` checks ``map_tasks`` against ``vmap`` on one tuple and
``tests/core/test_linalg.py`` ``sum_over_chunks`` against a plain sum. Proven here:

* ``chunk_for`` returns, for every task count and request, the largest divisor within
  the request, a multiple of 8 whenever one exists (checked exhaustively on small sizes);
* ``chunk_under_budget``/``auto_task_chunk`` give the largest power of two >= 8 whose
  chunk stays within the element budget;
* ``map_tasks`` equals a Python loop over tasks for pytrees with ``None`` leaves and
  dict outputs, runs as a loop of ``T / chunk`` steps when chunked and as one ``vmap``
  otherwise;
* chunks are strided: chunk ``j`` holds tasks ``j, j + n_chunks, ...``;
* ``sum_with_gradient`` has the value and gradient of the plain sum, also through
  ``linearize`` and a transpose (as L-BFGS takes it);
* with the task axis split across ``shards`` devices, every shard's chunks hold tasks of
  its own contiguous block only, sums and gradients are unchanged, and on two devices
  the compiled sum adds the devices' partial sums once, after the loop over chunks
  (without shards, XLA adds them in every step of it);
* ``task_mesh``/``shard_tasks`` split arrays with a leading task axis along the
  ``"tasks"`` mesh axis, replicate every other array and leave non-arrays alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn.core import parallel as par

# --------------------------------------------------------------------------- chunk sizes


def test_chunk_for_is_the_largest_divisor_preferring_multiples_of_eight():
    for n in range(1, 50):
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        for chunk in range(-1, n + 3):
            got = par.chunk_for(n, chunk)
            if chunk <= 0 or chunk >= n:
                assert got == n, (n, chunk)
                continue
            fit = [d for d in divisors if d <= chunk]
            eights = [d for d in fit if d % 8 == 0]
            assert got == (max(eights) if eights else max(fit)), (n, chunk, got)
    # 48 tasks, up to 20 per chunk: 16 (a multiple of 8) beats the larger divisor 12.
    assert par.chunk_for(48, 20) == 16
    assert par.chunk_for(13, 6) == 1  # a prime count runs task by task


def test_chunk_under_budget_is_the_largest_fitting_power_of_two_from_eight():
    for per_task in (1, 3, 100, 1000, 5000, 70_000):
        for budget in (10, 1000, 1 << 16, 1 << 22):
            got = par.chunk_under_budget(per_task, budget)
            assert got >= 8 and got & (got - 1) == 0
            if got > 8:
                assert got * per_task <= budget < 2 * got * per_task, (per_task, budget)
            else:
                assert 16 * per_task > budget, (per_task, budget)
    assert par.chunk_under_budget(0, 64) == 64  # empty tasks count as one element


def test_auto_task_chunk_keeps_a_chunk_of_blocks_under_32_mib():
    # (chunk, K, O, N, N) float64 blocks: 2 x 3 x 50 x 50 = 15000 elements per task.
    assert par.auto_task_chunk(50, 2, 3) == 256  # 256 x 15000 x 8 B = 29 MiB
    assert 256 * 15000 * 8 <= 32 * 2**20 < 512 * 15000 * 8
    assert par.auto_task_chunk(2000, 4, 2) == 8  # far over budget: the floor
    assert par.auto_task_chunk(1, 1, 1) == 1 << 22


# --------------------------------------------------------------------------- map_tasks


def _per_task(args):
    """One task's outputs: depends on its own rows only, through a None leaf too."""
    a, none, b = args
    assert none is None
    return {"scaled": a * b, "norm": jnp.sum(a**2)}


@pytest.fixture(scope="module")
def task_arrays():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 3)), rng.normal(size=12)


@pytest.mark.parametrize("chunk", [0, 3, 5, 12])
def test_map_tasks_equals_a_loop_over_tasks(task_arrays, chunk):
    a, b = task_arrays
    out = jax.jit(lambda a, b: par.map_tasks(_per_task, (a, None, b), chunk))(a, b)
    np.testing.assert_allclose(np.asarray(out["scaled"]), a * b[:, None], rtol=1e-15)
    np.testing.assert_allclose(np.asarray(out["norm"]), (a**2).sum(1), rtol=1e-14)


@pytest.mark.parametrize(("chunk", "n_steps"), [(4, 3), (6, 2), (5, 3), (0, None), (12, None)])
def test_map_tasks_loops_over_chunks_only_when_chunked(task_arrays, chunk, n_steps):
    # A chunked map is a scan (lax.map) of T / chunk steps; otherwise one vmap, no loop.
    a, b = task_arrays
    jaxpr = jax.make_jaxpr(lambda a, b: par.map_tasks(_per_task, (a, None, b), chunk))(a, b)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    if n_steps is None:
        assert not scans
    else:
        assert len(scans) == 1 and scans[0].params["length"] == n_steps


def _membership(n_tasks: int):
    """A chunk's contribution: ``[i, j] = 1`` for the tasks ``i, j`` it holds together."""

    def fn(ids):
        held = jnp.sum(jax.nn.one_hot(ids, n_tasks), axis=0)
        return jnp.outer(held, held)

    return fn


@pytest.mark.parametrize(("n_tasks", "chunk"), [(12, 4), (12, 3)])
def test_chunks_are_strided(n_tasks, chunk):
    ids = jnp.arange(n_tasks)
    together = np.asarray(par.sum_over_chunks(_membership(n_tasks), ids, chunk))
    n_chunks = n_tasks // chunk
    i, j = np.meshgrid(np.arange(n_tasks), np.arange(n_tasks), indexing="ij")
    np.testing.assert_array_equal(together, (i % n_chunks == j % n_chunks).astype(float))
    # Each chunk holds exactly `chunk` tasks.
    np.testing.assert_array_equal(together.sum(1), chunk)


def test_sum_over_chunks_hands_fn_chunks_of_the_chosen_size():
    seen = []

    def fn(x):
        seen.append(x.shape)
        return jnp.sum(x)

    x = jnp.arange(24.0).reshape(12, 2)
    assert float(par.sum_over_chunks(fn, x, 5)) == float(jnp.sum(x))
    # chunk_for(12, 5) = 4; traced for the running sum's shape, then inside lax.scan.
    assert set(seen) == {(4, 2)}
    seen.clear()
    par.sum_over_chunks(fn, x, 0)
    assert seen == [(12, 2)]


@pytest.mark.parametrize("chunk", [0, 4, 5])
def test_sum_with_gradient_equals_the_plain_sum_and_its_gradient(chunk):
    # Shared values get the summed gradient, per-task values their own (in task order),
    # and integer data passes through; chunk 5 falls back to 4, 0 is one vmap.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(12, 3)))
    ids = jnp.arange(12) % 5
    per_task = jnp.asarray(rng.normal(size=12))

    def fn(shared, pt, consts, xs):
        a, b = shared
        xc, ic = xs
        return jnp.sum(jnp.sin(a * xc).sum(-1) * pt**2 + b * ic * consts)

    def plain(shared, pt):
        return fn(shared, pt, 2.0, (x, ids))

    def chunked(shared, pt):
        return par.sum_with_gradient(fn, shared, pt, jnp.asarray(2.0), (x, ids), chunk)

    shared = (jnp.asarray(0.7), jnp.asarray(1.3))
    want, want_grad = jax.value_and_grad(plain, argnums=(0, 1))(shared, per_task)
    got, got_grad = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(shared, per_task)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-13)
    for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    # As optimistix's L-BFGS takes it: linearise, then transpose the linear map.
    value, lin = jax.linearize(lambda s: chunked(s, per_task), shared)
    (grad,) = jax.linear_transpose(lin, shared)(jnp.asarray(1.0))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad[0]), rtol=1e-12)


@pytest.mark.parametrize(("shards", "chunk"), [(2, 4), (3, 4), (3, 2), (2, 0), (5, 4)])
def test_sharded_chunks_stay_inside_each_shards_block(shards, chunk):
    # 12 tasks in shards of 12 / shards: each shard's block is split into strided chunks
    # of about chunk / shards tasks (at least one; chunk 0: the whole block); 5 shards do
    # not divide 12 tasks: one shard, as without sharding.
    n = 12
    together = np.asarray(par.sum_over_chunks(_membership(n), jnp.arange(n), chunk, shards))
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    if shards == 5:
        want = np.asarray(par.sum_over_chunks(_membership(n), jnp.arange(n), chunk))
    else:
        per = n // shards
        c = par.chunk_for(per, max(1, chunk // shards) if chunk else 0)
        same_shard = i // per == j // per
        want = (same_shard & ((i % per) % (per // c) == (j % per) % (per // c))).astype(float)
    np.testing.assert_array_equal(together, want)
    assert together.trace() == n  # every task counted once


@pytest.mark.parametrize(("shards", "chunk"), [(2, 4), (3, 2), (2, 0)])
def test_sharded_sum_with_gradient_equals_the_plain_sum_and_its_gradient(shards, chunk):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(12, 3)))
    per_task = jnp.asarray(rng.normal(size=12))

    def fn(shared, pt, consts, xs):
        return jnp.sum(jnp.cos(shared * xs).sum(-1) * pt + consts * pt**2)

    def plain(shared, pt):
        return fn(shared, pt, 0.5, x)

    def sharded(shared, pt):
        return par.sum_with_gradient(fn, shared, pt, jnp.asarray(0.5), x, chunk, shards)

    shared = jnp.asarray(0.9)
    want, want_grad = jax.value_and_grad(plain, argnums=(0, 1))(shared, per_task)
    got, got_grad = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(shared, per_task)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-13)
    for a, b in zip(got_grad, want_grad, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)


_SNIPPET_COLLECTIVES = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp
    from mimosa_sklearn.core import parallel as par
    mesh = par.task_mesh()
    x = par.shard_tasks(jnp.arange(64.0 * 3).reshape(64, 3), mesh, 64)

    def fn(shared, pt, consts, xs):
        return jnp.sum(jnp.sin(shared * xs))

    def where(text):
        # all-reduces in the entry computation, and in any other (loop bodies, calls)
        entry = text[text.index("ENTRY"):]
        entry = entry[: entry.index("\\n}")]
        return entry.count(" all-reduce("), text.count(" all-reduce(") - entry.count(" all-reduce(")

    for shards in (1, 2):
        total = jax.jit(lambda a: par.sum_over_chunks(lambda c: jnp.sum(c**2, 0), a, 8, shards))
        grad = jax.jit(jax.grad(
            lambda s, a: par.sum_with_gradient(fn, s, None, None, a, 8, shards)))
        print(shards, *where(total.lower(x).compile().as_text()),
              *where(grad.lower(jnp.asarray(0.5), x).compile().as_text()))
    """
)


def test_sharded_sums_add_the_devices_partial_sums_once_after_the_loop():
    """On two devices, a sum over chunks adds the devices' partial sums in every step of
    its loop unless it knows the shards: two processes on two cores spent most of a
    fit waiting in thousands of such all-reduces per EM iteration (10k tasks: 168 s,
    against 5 s once they met after the loop)."""
    out = subprocess.run(
        [sys.executable, "-c", _SNIPPET_COLLECTIVES],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MIMOSA_SKLEARN_CPU_GUARD": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {int(r.split()[0]): [int(v) for v in r.split()[1:]] for r in out.stdout.splitlines()}
    # shards=1: the loop body holds the all-reduce (sum, then gradient); shards=2: only
    # the entry computation does.
    assert rows[1][1] >= 1 and rows[1][3] >= 1
    assert rows[2][0] >= 1 and rows[2][1] == 0
    assert rows[2][2] >= 1 and rows[2][3] == 0


# --------------------------------------------------------------------------- sharding


def test_task_mesh_is_one_tasks_axis_over_the_devices():
    mesh = par.task_mesh()
    assert mesh.axis_names == ("tasks",)
    assert list(mesh.devices) == jax.devices()
    one = par.task_mesh(jax.devices()[:1])
    assert one.devices.shape == (1,)


def test_shard_tasks_splits_task_arrays_and_replicates_the_rest():
    from jax.sharding import PartitionSpec as P

    mesh = par.task_mesh()
    t = len(jax.devices()) * 2
    tree = {
        "x": np.arange(t * 3.0).reshape(t, 3),
        "weight": jnp.ones(t),
        "grid": np.ones((t + 1, 2)),  # leading axis is not the task axis
        "scalar": jnp.asarray(1.5),
        "flag": True,
        "none": None,
    }
    out = par.shard_tasks(tree, mesh, t)
    assert out["x"].sharding.spec == P("tasks") and out["weight"].sharding.spec == P("tasks")
    assert out["grid"].sharding.spec == P() and out["scalar"].sharding.spec == P()
    assert out["flag"] is True and out["none"] is None
    np.testing.assert_array_equal(np.asarray(out["x"]), tree["x"])
    np.testing.assert_array_equal(np.asarray(out["grid"]), tree["grid"])
