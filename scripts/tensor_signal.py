"""Which parameter tensors carry a zoo's signal? GBM on each tensor's statistics alone, and on all but it.

    python scripts/tensor_signal.py --store results/store --zoo mnist/arch2 --n-train 800 --min-acc 0.2

GBM (`sne_core.baselines.gbm`, rounds chosen on validation) is fitted on the StatNN statistics of one
parameter tensor ("alone") and of every tensor but that one ("without"), then on each statistic of
every tensor; each fit is scored by Kendall tau on the zoo's test split. `--min-acc 0.2` keeps only the
networks that learned (test accuracy >= 0.2) in train, validation and test: the part of the ranking
where the methods differ most (`metrics.tau_by_region`, docs/RESULTS.md, session 11). Training
networks are learning_curve.py's seeded subsample. GBM's leaves hold at least 20 networks, so a fit on
fewer than about 50 training networks predicts a constant and its tau is NaN. Library only; last line
`tensor_signal zoo=... tau_all=...`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from learning_curve import subsample   # scripts/ is on sys.path when this file runs as a script

from sne_core.baselines.statnn import N_STATS, QUANTILES

STATS = ("mean", "var", *(f"q{round(100 * q)}" for q in QUANTILES))   # tensor_statistics' order
assert len(STATS) == N_STATS


def signal_rows(x: dict, y: dict, tensors: list[str], seed: int = 0) -> list[dict]:
    """x, y: {"train", "val", "test"} -> feature rows and accuracies. One row per column subset."""
    from sne_core.baselines.gbm import GBMPredictor
    from sne_core.metrics import kendall_tau
    every = [c for j in range(len(tensors)) for c in range(j * N_STATS, (j + 1) * N_STATS)]

    def tau(cols: list[int]) -> float:
        gbm = GBMPredictor([], n_threads=1).fit_features(x["train"][:, cols], y["train"], x["val"][:, cols], y["val"], seed)
        return kendall_tau(gbm.predict_features(x["test"][:, cols]), y["test"])

    rows = [{"what": "all", "name": "every tensor", "tau_alone": tau(every), "tau_without": float("nan")}]
    for j, name in enumerate(tensors):
        own = list(range(j * N_STATS, (j + 1) * N_STATS))
        rows.append({"what": "tensor", "name": name, "tau_alone": tau(own),
                     "tau_without": tau([c for c in every if c not in own])})
    for k, stat in enumerate(STATS):
        own = [j * N_STATS + k for j in range(len(tensors))]
        rows.append({"what": "statistic", "name": stat, "tau_alone": tau(own),
                     "tau_without": tau([c for c in every if c not in own])})
    return rows


def zoo_features(store_root, zoo: str, n_train: int | None, seed: int, min_acc: float | None, who: str):
    """(parts, x, y, records) of one single-architecture zoo, each {"train", "val", "test"} -> the split part's
    ZooData, its networks' StatNN statistics (GBM's features), accuracies, and `models`-table records
    (`aux_targets.TARGETS` columns). `n_train`: learning_curve.py's seeded subsample of the training networks;
    `min_acc`: keep only networks with test accuracy >= it (x, y and records; parts stay whole)."""
    from sne_core.baselines.gbm import GBMPredictor
    from sne_core.protocols import load_zoo
    from sne_core.store import ZooStore

    store = ZooStore(store_root)
    parts = {part: load_zoo(store, zoo, part) for part in ("train", "val", "test")}
    if n_train is not None:
        parts["train"] = subsample(parts["train"], n_train, seed)
    archs = {g.arch.name for d in parts.values() for g in d.groups}
    if len(archs) != 1:
        raise SystemExit(f"{who}: {zoo} holds architectures {sorted(archs)}; expected one")
    reader = GBMPredictor([])
    x = {k: reader.features(d.groups) for k, d in parts.items()}
    y = {k: d.y.numpy() for k, d in parts.items()}
    records = {k: d.aux.numpy() for k, d in parts.items()}
    if min_acc is not None:
        for k in parts:
            keep = y[k] >= min_acc
            if keep.sum() < 2:
                raise SystemExit(f"{who}: {zoo}:{k} has {keep.sum()} networks with test accuracy "
                                 f">= --min-acc {min_acc}; need at least 2")
            x[k], y[k], records[k] = x[k][keep], y[k][keep], records[k][keep]
    return parts, x, y, records


def parse_args(description: str, argv=None) -> argparse.Namespace:
    """The options every GBM signal script here takes (this one and record_signal.py)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--store", required=True)
    p.add_argument("--zoo", required=True, help="dataset/arch, e.g. mnist/arch2")
    p.add_argument("--n-train", type=int, default=None, help="training networks (default: the whole train split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training subsample and of GBM")
    p.add_argument("--min-acc", type=float, default=None, help="keep only networks with test accuracy >= this")
    p.add_argument("--out", default=None, help="CSV file for the rows")
    return p.parse_args(argv)


def show_rows(rows, args, y: dict) -> None:
    """Print the networks counted and the rows; write them to --out as CSV if given."""
    print(f"zoo {args.zoo}: train {len(y['train'])}, validation {len(y['val'])}, test {len(y['test'])} networks"
          + ("" if args.min_acc is None else f" with test accuracy >= {args.min_acc}"))
    print(rows.round(3).to_string(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(args.out, index=False)


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    import pandas as pd
    import torch

    parts, x, y, _ = zoo_features(args.store, args.zoo, args.n_train, args.seed, args.min_acc, "tensor_signal")
    torch.set_num_threads(1)
    tensors = [info.name for info in parts["train"].groups[0].arch.layout]
    rows = pd.DataFrame(signal_rows(x, y, tensors, args.seed))
    show_rows(rows, args, y)
    print(f"tensor_signal zoo={args.zoo} tau_all={rows.tau_alone.iloc[0]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
