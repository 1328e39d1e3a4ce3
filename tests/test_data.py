"""CIFAR-10 loading: official layout, restricted unpickling, corrupt files, download checks."""

import hashlib
import os
import pickle

import numpy as np
import pytest
from cifar_files import batch_dict, make_images, pickle_batch, write_archive, write_cifar10

from anynet import data
from anynet.data import DatasetError, download_cifar10, get_cifar10_data, load_cifar10, unpickle


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A small generated dataset: (parent folder, batches folder, arrays as written)."""
    root = tmp_path_factory.mktemp("cifar")
    folder, arrays = write_cifar10(root, n_per_batch=30, n_test=50)
    return root, folder, arrays


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("form", ["parent", "folder"])
def test_load_cifar10_reads_official_layout(tmp_path, protocol, form):
    folder, (X_train, y_train, X_test, y_test) = write_cifar10(tmp_path, n_per_batch=20, n_test=30, protocol=protocol)
    out = load_cifar10(tmp_path if form == "parent" else folder)
    for got, want in zip(out, (X_train, y_train, X_test, y_test), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert out[0].shape == (100, 32, 32, 3)


def test_load_cifar10_accepts_string_paths_and_env(cifar, monkeypatch):
    root, _, (X_train, *_) = cifar
    monkeypatch.setenv("ANYNET_DATA", str(root))
    np.testing.assert_array_equal(load_cifar10()[0], X_train)
    np.testing.assert_array_equal(load_cifar10(str(root))[0], X_train)


def test_get_cifar10_data_splits_and_normalizes_like_the_course(cifar):
    root, _, (X_train, y_train, X_test, y_test) = cifar
    d = get_cifar10_data(root, num_training=100, num_validation=20, num_test=40, download=False)
    mean = X_train[:100].astype(np.float64).mean(axis=0)

    def expected(X):
        return (X.astype(np.float64) - mean).transpose(0, 3, 1, 2)

    np.testing.assert_allclose(d["X_train"], expected(X_train[:100]), atol=1e-4)
    np.testing.assert_allclose(d["X_val"], expected(X_train[100:120]), atol=1e-4)
    np.testing.assert_allclose(d["X_test"], expected(X_test[:40]), atol=1e-4)
    np.testing.assert_array_equal(d["y_val"], y_train[100:120])
    np.testing.assert_array_equal(d["y_test"], y_test[:40])
    assert d["X_train"].dtype == np.float32 and d["X_train"].shape == (100, 3, 32, 32)

    raw = get_cifar10_data(root, 100, 20, 0, subtract_mean=False, dtype="float64", download=False)
    np.testing.assert_array_equal(raw["X_val"], X_train[100:120].transpose(0, 3, 1, 2).astype(np.float64))
    assert raw["X_test"].shape == (0, 3, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_training": 140, "num_validation": 20}, ValueError, "num_training \\+ num_validation"),
        ({"num_test": 51}, ValueError, "num_test must be at most 50"),
        ({"num_training": 0}, ValueError, "num_training"),
        ({"num_validation": 2.5}, TypeError, "num_validation"),
        ({"dtype": "float16"}, ValueError, "dtype"),
    ],
)
def test_get_cifar10_data_rejects_bad_sizes(cifar, kwargs, error, match):
    with pytest.raises(error, match=match):
        get_cifar10_data(cifar[0], **{"num_training": 100, "num_validation": 20, "num_test": 10, **kwargs})


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as info:
        get_cifar10_data(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere") in str(info.value)


class _Exploit:
    """Unpickling this would create a folder: a stand-in for arbitrary code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_unpickler_refuses_code_and_nothing_runs(tmp_path, cifar):
    target = tmp_path / "pwned"
    # The same pickle, read by the standard unpickler, does run: the test would notice.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Exploit(probe)))
    assert probe.is_dir()

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (folder / name).write_bytes((cifar[1] / name).read_bytes())
    evil = {b"data": _Exploit(target), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_1: refused to unpickle (posix|nt)\.mkdir"):
        load_cifar10(tmp_path)
    assert not target.exists()


@pytest.mark.parametrize(
    "payload",
    [
        np.array([object(), 1], dtype=object),  # object arrays would unpickle arbitrary elements
        np.ma.masked_array([1, 2]),  # an ndarray subclass
        {b"data": __import__("collections").OrderedDict()},
    ],
    ids=["object-array", "subclass", "other-global"],
)
def test_unpickler_refuses_anything_but_plain_arrays(tmp_path, payload):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DatasetError, match="refused to unpickle"):
        unpickle(path)


def test_codecs_encode_only_for_latin1(tmp_path):
    # A protocol-2 pickle of bytes calls _codecs.encode(text, "latin1"); any other codec is refused.
    raw = pickle.dumps(b"\x00\xff", protocol=2)
    path = tmp_path / "ok"
    path.write_bytes(raw)
    assert unpickle(path) == b"\x00\xff"
    path.write_bytes(raw.replace(b"latin1", b"rot_13"))
    with pytest.raises(DatasetError, match="rot_13"):
        unpickle(path)


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    folder, _ = write_cifar10(tmp_path, n_per_batch=10, n_test=10)
    path = folder / "data_batch_3"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="data_batch_3 is truncated or corrupt"):
        load_cifar10(tmp_path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update({b"labels": d[b"labels"][:-1]}), "10 images but 9 labels"),
        (lambda d: d.update({b"labels": [10] + d[b"labels"][1:]}), "labels must lie in"),
        (lambda d: d.update({b"data": d[b"data"][:, :100]}), "shape"),
        (lambda d: d.update({b"data": d[b"data"].astype(np.float32)}), "uint8"),
        (lambda d: d.pop(b"data"), "data"),
    ],
    ids=["short-labels", "label-range", "shape", "dtype", "missing-key"],
)
def test_malformed_batches_are_rejected(tmp_path, mutate, match):
    X, y = make_images(10, np.random.default_rng(0))
    d = batch_dict(X, y, "x")
    mutate(d)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle_batch(d))
    with pytest.raises(DatasetError, match=match):
        data.load_batch(path)


@pytest.fixture(scope="module")
def archive(cifar, tmp_path_factory):
    """The generated dataset packed like cifar-10-python.tar.gz, and its MD5."""
    path = write_archive(cifar[1], tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_md5_and_leaves_nothing_behind(tmp_path, archive):
    path, md5 = archive
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=f"MD5 {md5} does not match the expected {'0' * 32}"):
        download_cifar10(root, url=path, md5="0" * 32, quiet=True)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("as_url", [False, True])
def test_download_extracts_into_place(tmp_path, archive, cifar, as_url):
    path, md5 = archive
    root = tmp_path / "data"
    url = path.as_uri() if as_url else str(path)
    folder = download_cifar10(root, url=url, md5=md5, quiet=True)
    assert folder == root / "cifar-10-batches-py"
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]  # no temporary files left
    np.testing.assert_array_equal(load_cifar10(root)[3], cifar[2][3])
    # Already there: nothing is fetched (the bogus URL is never opened).
    assert download_cifar10(root, url=tmp_path / "absent.tar.gz", quiet=True) == folder


def test_download_offline_says_where_to_put_files(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="could not download .*extract it there") as info:
        download_cifar10(root, url=tmp_path / "absent.tar.gz", quiet=True)
    assert str(root / "cifar-10-batches-py" / "data_batch_1") in str(info.value)
    assert list(root.iterdir()) == []


def test_download_refuses_a_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    md5 = hashlib.md5(bad.read_bytes()).hexdigest()
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="could not be extracted"):
        download_cifar10(root, url=bad, md5=md5, quiet=True)
    assert list(root.iterdir()) == []
