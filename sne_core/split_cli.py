"""`sne split`: create, check or grow the stored split of one zoo and print its counts.

    sne split --store data/store --zoo mnist/arch1 --grow

Without --grow the split is created on first use and otherwise checked against the zoo (the
check every evaluation makes). With --grow, a zoo that gained networks since its split was
written (`sne zoo --models` raised) gets them split by the stored fractions, while every network
already in the split keeps its part (sne_core.splits.grow_split).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="weight store root holding the zoo")
    p.add_argument("--zoo", required=True, help="dataset/arch (e.g. mnist/arch1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0, the one every method shares)")
    p.add_argument("--grow", action="store_true", help="split the networks added since the split was written")


def run(args: argparse.Namespace) -> int:
    from sne_core.protocols import parse_zoo
    from sne_core.splits import SplitError, get_or_create_split, split_counts, split_path
    from sne_core.store import ZooStore

    dataset, arch = parse_zoo(args.zoo)
    try:
        split = get_or_create_split(ZooStore(args.store), dataset, arch, args.seed, grow=args.grow)
    except SplitError as e:
        raise SystemExit(f"sne split: {e}")
    counts = " ".join(f"{k}={v}" for k, v in split_counts(split).items())
    print(f"{args.store}/{split_path(dataset, arch, args.seed)}: {counts}")
    return 0
