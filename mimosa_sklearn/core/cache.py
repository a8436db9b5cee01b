"""Files of the on-disk cache of compiled programs: where they live, how they are written.

What goes into an entry and when it may be used is decided by
:mod:`mimosa_sklearn.core.compile` and :mod:`mimosa_sklearn.core.program_key`; this
module only stores bytes under a key, safely for several processes at once.

Location
    ``platformdirs.user_cache_dir("mimosa_sklearn")`` (``~/.cache/mimosa_sklearn`` on
    Linux), or the folder named by ``MIMOSA_SKLEARN_CACHE_DIR``; an empty value turns
    the cache off (nothing is read or written). Entries go into a subfolder named after
    the entry format (``programs-v1``), so a package release that changes the format
    never reads older entries.

Entries
    One file per key: a magic line, the key, the SHA-256 of the payload, the payload.
    A file whose header, key or checksum does not match (a truncated or corrupt file, a
    file copied under another name) reads as missing and is rewritten by the next miss.
    Files are written to a temporary file in the same folder and renamed with
    :func:`os.replace`, so readers see a whole entry or none, and two processes writing
    the same entry both succeed (the last rename wins; both files are equal).

One build per entry
    A process that misses an entry builds it under a lock of its own key (an advisory
    ``fcntl.flock`` on ``<key>.lock``, :func:`building`). Another process that misses
    the same key meanwhile (the workers of a ``GridSearchCV`` with ``n_jobs=2``, which
    fit the same shapes at the same moment) waits for that lock, then reads the entry
    instead of compiling the program a second time. The operating system releases the
    lock of a process that dies; a process that waits more than
    :data:`LOCK_WAIT_SECONDS` builds the entry itself. Where ``fcntl`` does not exist
    (Windows), every process builds its own entries, as before.

Size
    At most ``MIMOSA_SKLEARN_CACHE_MAX_MB`` megabytes (default 1024, i.e. 1 GiB). Every
    write evicts the least recently used entries (file modification time, refreshed on
    every hit) until the folder fits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import platformdirs

__all__ = [
    "DIR_ENV",
    "MAX_MB_ENV",
    "DEFAULT_MAX_MB",
    "FORMAT",
    "LOCK_WAIT_SECONDS",
    "directory",
    "read",
    "write",
    "building",
]

DIR_ENV = "MIMOSA_SKLEARN_CACHE_DIR"
MAX_MB_ENV = "MIMOSA_SKLEARN_CACHE_MAX_MB"
DEFAULT_MAX_MB = 1024
# Bumped whenever the layout of a file or of its payload changes.
FORMAT = 1
_MAGIC = b"mimosa_sklearn compiled program\n"
_DIGEST = 32
_SUFFIX = ".bin"
_TMP_PREFIX = ".tmp-"
_LOCK_SUFFIX = ".lock"
# A temporary or lock file this old was left by a process that died while writing it.
_STALE_TMP_SECONDS = 3600
#: How long a process waits for another one building the same entry before it builds
#: the entry itself (the largest programs compile in under a minute).
LOCK_WAIT_SECONDS = 600.0
_POLL_SECONDS = 0.02
_log = logging.getLogger(__name__)


def directory() -> Path | None:
    """The folder of this format's entries, or None when the cache is off."""
    root = os.environ.get(DIR_ENV)
    if root is None:
        root = platformdirs.user_cache_dir("mimosa_sklearn")
    elif not root:
        return None
    return Path(root) / f"programs-v{FORMAT}"


def _max_bytes() -> int:
    try:
        return int(float(os.environ.get(MAX_MB_ENV, DEFAULT_MAX_MB)) * 2**20)
    except ValueError:
        return DEFAULT_MAX_MB * 2**20


def _entry(folder: Path, key: str) -> Path:
    return folder / f"{key}{_SUFFIX}"


def read(key: str) -> bytes | None:
    """The payload stored under ``key`` (a hex digest), or None (off, missing, damaged).

    A hit refreshes the file's modification time, which the size cap's eviction uses.
    """
    folder = directory()
    if folder is None:
        return None
    path = _entry(folder, key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + len(key)
    payload = data[head + _DIGEST :]
    if (
        data[:head] != _MAGIC + key.encode()
        or data[head : head + _DIGEST] != hashlib.sha256(payload).digest()
    ):
        _log.info("Ignoring the damaged cache entry %s.", path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)
    return payload


def write(key: str, payload: bytes) -> None:
    """Store ``payload`` under ``key`` atomically, then evict down to the size cap.

    Failures (a read-only or full disk) are logged and otherwise ignored: the cache only
    ever saves time.
    """
    folder = directory()
    if folder is None:
        return
    data = _MAGIC + key.encode() + hashlib.sha256(payload).digest() + payload
    tmp = None
    try:
        # Private to the user: loading an entry runs code that it holds.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TMP_PREFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, _entry(folder, key))
        tmp = None
        _evict(folder, _max_bytes())
    except OSError as err:
        _log.info("Could not write the cache entry %s: %s", key, err)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def building(key: str) -> Iterator[None]:
    """Hold ``key``'s build lock for the body: other processes entering
    ``building(key)`` wait until it ends (or :data:`LOCK_WAIT_SECONDS`).

    The caller reads the entry again inside the body: another process may have
    written it while this one waited. Without a cache, a lock file or ``fcntl``, the
    body runs unlocked.
    """
    folder = directory()
    path = None if folder is None else folder / f"{key}{_LOCK_SUFFIX}"
    fd = None if path is None else _acquire(path)
    try:
        yield
    finally:
        if fd is not None:
            _release(fd, path)


def _acquire(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        _log.info("Building %s without its lock: %s", path.stem, err)
        return None
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() - start > LOCK_WAIT_SECONDS:
                    _log.warning(
                        "Another process has been building the compiled program %s for"
                        " %.0f s; compiling it here too.",
                        path.stem,
                        LOCK_WAIT_SECONDS,
                    )
                    break
                time.sleep(_POLL_SECONDS)
            else:
                _log.debug("Waited %.2f s for the lock of %s.", time.monotonic() - start, path.stem)
                return fd
    except OSError as err:  # a file system without locks
        _log.info("Building %s without its lock: %s", path.stem, err)
    except BaseException:  # interrupted while waiting (Ctrl-C)
        os.close(fd)
        raise
    os.close(fd)
    return None


def _release(fd: int, path: Path) -> None:
    """Remove the lock file (unless another process has made a new one), then unlock."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    os.close(fd)


def _evict(folder: Path, max_bytes: int) -> None:
    """Delete the least recently used entries until the folder holds ``max_bytes``."""
    entries = []
    now = time.time()
    for item in os.scandir(folder):
        try:
            stat = item.stat()
        except OSError:  # deleted meanwhile by another process
            continue
        if item.name.startswith(_TMP_PREFIX) or item.name.endswith(_LOCK_SUFFIX):
            if now - stat.st_mtime > _STALE_TMP_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(item.path)
            continue
        if item.name.endswith(_SUFFIX):
            entries.append((stat.st_mtime, stat.st_size, item.path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
        total -= size
