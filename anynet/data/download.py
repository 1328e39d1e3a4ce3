"""Where CIFAR-10 lives on disk, and how it gets there: found, or downloaded, MD5-checked and extracted.

The dataset is the folder ``cifar-10-batches-py`` of the official archive, in
``--data-dir``, ``$ANYNET_DATA`` or ``~/.cache/anynet``. A download lands in a
temporary file and a staging folder beside it, renamed into place only once
complete: an interrupted download never leaves a half-written dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .pickles import DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_CHUNK = 1 << 20


def data_root(root=None) -> Path:
    """Where the data lives: ``root``, else ``$ANYNET_DATA``, else ``~/.cache/anynet``."""
    if root is None:
        root = os.environ.get("ANYNET_DATA") or Path.home() / ".cache" / "anynet"
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None; got {type(root).__name__}")
    return Path(root).expanduser()


def find_cifar10(root=None):
    """Return the ``cifar-10-batches-py`` folder at ``root`` (the folder itself or its parent), or None."""
    root = data_root(root)
    for folder in (root, root / FOLDER):
        if (folder / TRAIN_BATCHES[0]).is_file():
            return folder
    return None


def missing_message(root: Path) -> str:
    """Tell the user where to put the files by hand."""
    return (
        f"CIFAR-10 not found in {root}. Download {URL} (MD5 {MD5}) and extract it there, so that "
        f"{root / FOLDER / TRAIN_BATCHES[0]} exists; or point --data-dir / $ANYNET_DATA at a folder holding "
        f"{FOLDER}"
    )


def _open_source(url):
    """Open ``url`` (http, https, file) or a local path; return (stream, size or None)."""
    if "://" in str(url):
        response = urllib.request.urlopen(str(url), timeout=60)  # noqa: S310 - the caller chooses the source
        size = response.headers.get("Content-Length")
        return response, int(size) if size else None
    path = Path(url)
    return open(path, "rb"), path.stat().st_size


def _fetch(url, dest: Path, quiet: bool) -> str:
    """Copy ``url`` to ``dest`` with a progress bar; return the MD5 hex digest."""
    md5 = hashlib.md5()
    stream, size = _open_source(url)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc="cifar-10-python.tar.gz")
    try:
        with stream, open(dest, "wb") as out:
            while chunk := stream.read(_CHUNK):
                md5.update(chunk)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return md5.hexdigest()


def _extract(archive: Path, dest: Path):
    """Extract ``archive`` into ``dest``, refusing members that would land outside it."""
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or dest.resolve() not in target.parents:
                raise tarfile.TarError(f"unsafe member {member.name!r}")
        tar.extractall(dest)  # noqa: S202 - every member was checked above


def download_cifar10(root=None, url=URL, md5=MD5, quiet=False) -> Path:
    """Download and extract the official CIFAR-10 python archive into ``root``.

    The archive is checked against ``md5`` and extracted into a temporary
    folder beside the destination, which is renamed into place only once
    complete: an interrupted download never leaves a half-written dataset.

    Parameters
    ----------
    root : str or path, optional
        Parent folder of ``cifar-10-batches-py``; default as in ``data_root``.
    url : str or path
        An http(s) or file:// URL, or a local path to the archive.
    md5 : str
        Expected MD5 hex digest of the archive.
    quiet : bool
        No progress bar.

    Returns
    -------
    Path
        The ``cifar-10-batches-py`` folder.

    Raises
    ------
    FileNotFoundError
        If the archive cannot be fetched (offline, say); the message says
        where to put the files by hand.
    DatasetError
        If the MD5 does not match or the archive is corrupt.
    """
    root = data_root(root)
    found = find_cifar10(root)
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileNotFoundError(f"cannot create {root} ({exc.strerror or exc}). {missing_message(root)}") from None
    fd, part = tempfile.mkstemp(prefix=".cifar-10-python.", suffix=".tar.gz.part", dir=root)
    os.close(fd)
    part = Path(part)
    try:
        _fetch_checked(url, md5, part, root, quiet)
        return _put_in_place(part, url, root)
    finally:
        part.unlink(missing_ok=True)


def _fetch_checked(url, md5, part: Path, root: Path, quiet: bool) -> None:
    """Copy ``url`` to ``part``; raise unless it came whole and its MD5 is ``md5``."""
    try:
        got = _fetch(url, part, quiet)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise FileNotFoundError(f"could not download {url} ({reason}). {missing_message(root)}") from None
    if got != md5:
        raise DatasetError(
            f"{url}: MD5 {got} does not match the expected {md5}; the archive is corrupt or not the "
            "CIFAR-10 python version, and was deleted"
        )


def _put_in_place(archive: Path, url, root: Path) -> Path:
    """Extract ``archive`` into a staging folder under ``root``, then rename its dataset into place; return it."""
    final = root / FOLDER
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=root))
    try:
        try:
            _extract(archive, staging)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DatasetError(f"{url}: the archive could not be extracted ({exc})") from None
        if find_cifar10(staging) is None:
            raise DatasetError(f"{url}: the archive holds no {FOLDER}/{TRAIN_BATCHES[0]}")
        try:
            os.replace(find_cifar10(staging), final)
        except OSError:
            # Another process finished first; its complete copy is as good as ours.
            if find_cifar10(root) is None:
                raise
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
