"""Files of the compiled-program cache: location, damaged entries, concurrent writers,
the size cap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import platformdirs
import pytest

from mimosa_sklearn.core import cache

KEY = "ab" * 32


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(cache.DIR_ENV, str(tmp_path))
    return tmp_path / f"programs-v{cache.FORMAT}"


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_folder_is_the_user_cache_dir_unless_the_variable_says_otherwise(monkeypatch):
    monkeypatch.delenv(cache.DIR_ENV, raising=False)
    user = Path(platformdirs.user_cache_dir("mimosa_sklearn"))
    assert cache.directory() == user / f"programs-v{cache.FORMAT}"
    monkeypatch.setenv(cache.DIR_ENV, "/somewhere/else")
    assert cache.directory() == Path("/somewhere/else") / f"programs-v{cache.FORMAT}"
    monkeypatch.setenv(cache.DIR_ENV, "")
    assert cache.directory() is None


def test_an_empty_variable_reads_and_writes_nothing(tmp_path, monkeypatch):
    # platformdirs' Linux default lives under XDG_CACHE_HOME: nothing may appear there.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(cache.DIR_ENV, "")
    cache.write(KEY, b"payload")
    assert cache.read(KEY) is None
    with cache.building(KEY):
        pass
    assert list(tmp_path.iterdir()) == []


def test_an_entry_reads_back_and_only_under_its_key(folder):
    assert cache.read(KEY) is None
    cache.write(KEY, b"payload")
    assert cache.read(KEY) == b"payload"
    assert _entries(folder) == [f"{KEY}.bin"]
    # The same file under another name is not an entry of that key.
    other = "cd" * 32
    (folder / f"{other}.bin").write_bytes((folder / f"{KEY}.bin").read_bytes())
    assert cache.read(other) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_entry_reads_as_missing_and_is_rewritten(folder, damage):
    cache.write(KEY, b"payload" * 100)
    path = folder / f"{KEY}.bin"
    data = path.read_bytes()
    damaged = {
        "truncate": data[:-10],
        "flip": data[:-1] + bytes([data[-1] ^ 1]),
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    assert cache.read(KEY) is None
    cache.write(KEY, b"payload" * 100)
    assert cache.read(KEY) == b"payload" * 100


def test_an_unusable_folder_is_ignored(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.DIR_ENV, str(blocker))
    cache.write(KEY, b"payload")  # logged, not raised
    assert cache.read(KEY) is None


def test_eviction_drops_the_least_recently_used_entries(folder, monkeypatch):
    size = 4000
    monkeypatch.setenv(cache.MAX_MB_ENV, str(2.5 * size / 2**20))  # room for two
    keys = [f"{i:064x}" for i in range(3)]
    for age, key in zip((300, 200), keys[:2], strict=True):
        cache.write(key, bytes(size))
        os.utime(folder / f"{key}.bin", (0, os.path.getmtime(folder / f"{key}.bin") - age))
    # A hit makes the oldest entry the most recently used one.
    assert cache.read(keys[0]) is not None
    cache.write(keys[2], bytes(size))
    assert _entries(folder) == sorted(f"{k}.bin" for k in (keys[0], keys[2]))


def test_temporary_files_of_dead_writers_are_removed(folder):
    cache.write(KEY, b"payload")
    stale, fresh = folder / ".tmp-stale", folder / ".tmp-fresh"
    stale_lock = folder / f"{'ef' * 32}.lock"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    stale_lock.touch()
    os.utime(stale, (0, 0))
    os.utime(stale_lock, (0, 0))
    cache.write("cd" * 32, b"payload")
    assert not stale.exists() and fresh.exists() and not stale_lock.exists()


def _hold(key: str, entered: threading.Event, seconds: float) -> threading.Thread:
    """A thread that holds ``key``'s build lock for ``seconds`` (its own open file, so
    the lock excludes this thread's as it excludes another process's)."""

    def run():
        with cache.building(key):
            entered.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert entered.wait(30)
    return thread


def test_a_build_waits_for_the_build_of_the_same_entry(folder):
    holder = _hold(KEY, threading.Event(), 0.5)
    start = time.monotonic()
    with cache.building(KEY):
        waited = time.monotonic() - start
    holder.join()
    assert waited > 0.3
    # Another entry's build does not wait; no lock file outlives its build.
    holder = _hold(KEY, threading.Event(), 0.5)
    start = time.monotonic()
    with cache.building("cd" * 32):
        assert time.monotonic() - start < 0.3
    holder.join()
    assert not list(folder.glob("*.lock"))


def test_a_build_that_waits_too_long_goes_ahead_with_a_warning(folder, monkeypatch, caplog):
    monkeypatch.setattr(cache, "LOCK_WAIT_SECONDS", 0.2)
    holder = _hold(KEY, threading.Event(), 1.5)
    start = time.monotonic()
    with cache.building(KEY):
        waited = time.monotonic() - start
    holder.join()
    assert 0.2 < waited < 1.2
    assert "compiling it here too" in caplog.text


# Loads the module from its file: importing the package would import JAX (seconds).
_WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("cache", sys.argv[2])
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    payload = bytes(range(256)) * 4000
    for _ in range(40):
        cache.write(sys.argv[1], payload)
        # Whole whoever wrote last: a reader never sees a partial file.
        assert cache.read(sys.argv[1]) == payload
    print("ok")
    """
)


def test_processes_writing_one_entry_at_once_all_succeed(folder):
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, KEY, cache.__file__],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "ok"
    assert cache.read(KEY) == bytes(range(256)) * 4000
    assert _entries(folder) == [f"{KEY}.bin"]  # no temporary file left behind


def test_a_file_system_without_locks_builds_unlocked(folder, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    caplog.set_level("INFO", logger=cache.__name__)
    with cache.building(KEY):
        cache.write(KEY, b"payload")
    assert cache.read(KEY) == b"payload"
    assert "without its lock" in caplog.text
