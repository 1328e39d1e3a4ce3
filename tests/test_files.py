"""anynet.files.write_atomic: the one writer of every file the command leaves behind."""

import os
import stat

import pytest

from anynet import files
from anynet.files import write_atomic


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_the_umask_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert files.umask() == mask
        write_atomic(tmp_path / "a.json", "{}\n")
        write_atomic(tmp_path / "b.npz", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o666 & ~mask
    assert _mode(tmp_path / "b.npz") == 0o666 & ~mask


def test_contents_of_bytes_str_and_writer_functions(tmp_path):
    path = tmp_path / "f"
    assert write_atomic(path, b"\x00\x01") == path
    assert path.read_bytes() == b"\x00\x01"
    write_atomic(str(path), "é\r\nline\n")
    assert path.read_bytes() == "é\r\nline\n".encode()
    write_atomic(path, lambda f: f.write(b"streamed"))
    assert path.read_bytes() == b"streamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, "old")

    def broken(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_bad_data_and_missing_folder_are_named(tmp_path):
    with pytest.raises(TypeError, match="data must be bytes, str or a function of a file; got int"):
        write_atomic(tmp_path / "f", 3)
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "f", "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(files.fcntl is None, reason="needs POSIX advisory locks")
def test_a_later_write_removes_only_a_dead_writers_old_temporaries(tmp_path):
    import fcntl

    old = [tmp_path / ".metrics.json.dead.tmp", tmp_path / ".metrics.json.alive.tmp"]
    fresh = tmp_path / ".metrics.json.fresh.tmp"  # just made by a writer that has not locked it yet
    other = tmp_path / ".history.json.dead.tmp"  # another file's
    for path in (*old, fresh, other):
        path.write_bytes(b"torn")
    long_ago = os.stat(fresh).st_mtime - 2 * files.STALE_SECONDS
    for path in (*old, other):
        os.utime(path, (long_ago, long_ago))
    with open(old[1], "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a live writer's lock
        write_atomic(tmp_path / "metrics.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["metrics.json", old[1].name, fresh.name, other.name])
