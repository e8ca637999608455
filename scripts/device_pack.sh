#!/bin/bash
# Here, before a device call: pack what the GPU machine lacks into .devcarry/ (git-ignored), which
# the call carries (64 MiB at most with the working tree). The GPU image has torch, numpy, pandas,
# pyarrow, scipy and scikit-learn but reaches no network: it gets MNIST and Fashion-MNIST as one
# gzipped tarball (about 41 MB; the IDX files are 106 MB unpacked) and the `nfn` wheel (pure Python;
# its one dependency, einops, is on the image).
#   bash scripts/device_pack.sh        then see scripts/device_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
test -f data/datasets/MNIST/raw/train-images-idx3-ubyte || make data
mkdir -p .devcarry/wheels
tar -czf .devcarry/datasets.tar.gz -C data datasets/MNIST/raw datasets/FashionMNIST/raw
rm -f .devcarry/wheels/*.whl
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .devcarry/wheels nfn==0.1.2
du -sh .devcarry
