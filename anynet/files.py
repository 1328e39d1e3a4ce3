"""The one way anynet writes a file: atomically, durably, with the permissions the umask gives.

Every file the command writes (checkpoints, models, metrics, histories,
sweep tables) goes through ``write_atomic``: the data goes to a temporary
file in the same folder, is flushed to disk and renamed over the target, so a
reader (or a crash) sees the old file or the new one, never half of one.
``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask; the
file is given ``0o666 & ~umask`` before the rename, as ``open`` would have.

A writer killed mid-write leaves its temporary file behind. Each writer
holds a lock on its temporary file until the rename (POSIX), so a later
write of the same file removes temporaries that no live process holds and
that have not changed for ``STALE_SECONDS``.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no cleanup of a dead writer's temporaries either
    fcntl = None

__all__ = ["STALE_SECONDS", "umask", "write_atomic"]

STALE_SECONDS = 60.0


def umask() -> int:
    """The process's umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which for a moment changes
    it for every thread of the process; Linux shows it in
    ``/proc/self/status``, which is read instead when it is there.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` atomically, with the permissions a plain ``open`` would give.

    Parameters
    ----------
    path : str or path
        The file to write; its folder must exist. A file already there is
        replaced only once the new one is complete on disk.
    data : bytes, str or callable
        The contents: bytes as they are, a str as UTF-8 (newlines unchanged),
        or a function ``write(f)`` that writes to the binary file ``f`` (so
        that large arrays need not be held in memory twice).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError
        If ``data`` is none of the above.
    OSError
        If the file cannot be written (no such folder, disk full, no
        permission); the file already at ``path``, if any, is untouched and no
        temporary file is left behind.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)) and not callable(data):
        raise TypeError(f"write_atomic: data must be bytes, str or a function of a file; got {type(data).__name__}")
    path = Path(path)
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        f = os.fdopen(fd, "wb")
        try:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # held until after the rename: this writer is alive
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            if hasattr(os, "fchmod"):  # absent on Windows, where mkstemp's file is writable anyway
                os.fchmod(f.fileno(), 0o666 & ~umask())
            os.fsync(f.fileno())
            if fcntl is None:
                f.close()  # Windows renames no open file
            os.replace(tmp, path)
        finally:
            f.close()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    _remove_stale_temporaries(path)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of ``path`` left by dead writers: unlocked and unchanged for ``STALE_SECONDS``."""
    if fcntl is None:
        return
    old = time.time() - STALE_SECONDS
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            # A live writer holds the lock (or has only just made its file: the age test covers that moment).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_mtime < old:
                stale.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def _fsync_dir(folder) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
