"""Build the zoos, train SNE and every baseline, and write the paper's three result tables.

    python scripts/paper_tables.py --size cpu  --out results/cpu     # 2-core CPU, ~1 hour
    python scripts/paper_tables.py --size full --out $OUT            # one GPU call (see docs/RESULTS.md)

Library only (sne_core): it runs on the bare GPU image, which has torch but no Dagster, MLflow or
DuckDB. Each (method, training zoo, seed) is trained once and scored on the test split of every
zoo; the in-distribution, cross-dataset and cross-architecture tables are cut from those rows.
Zoo building resumes: rerun the same command after an interruption and it trains only what is
missing. Outputs in --out: in_distribution.csv, cross_dataset.csv, cross_architecture.csv (the
columns of docs/results/), raw.csv (one row per seed and cell), tables.md and run.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

METHODS = ("sne", "mlp", "deepsets", "statnn", "gbm", "nfn_np", "nfn_hnp")


@dataclass(frozen=True)
class Size:
    """How big the zoos and how long the predictors train (*choose*; see the reasons below)."""
    models: int
    epochs: int
    max_images: int | None
    max_test_images: int | None
    zoo_batch: int            # protocol: 512; a CPU zoo sees few images, so smaller batches give it enough steps
    eval_train_images: int
    train_batch: int          # networks per predictor step
    train_epochs: int
    patience: int
    lr: float
    hyper: dict = field(default_factory=dict)   # method -> predictor hyperparameters over its defaults


SIZES = {
    # Seconds: tests run the whole script on it (build, train, write, then `sne import-results`).
    "smoke": Size(models=8, epochs=1, max_images=256, max_test_images=256, zoo_batch=64,
                  eval_train_images=256, train_batch=4, train_epochs=2, patience=2, lr=1e-3),
    # 200 networks a zoo (the SNE issue's floor), 3 epochs over 4,000 images: ~10 minutes a MNIST
    # zoo on 2 cores. 80 training networks a zoo, so predictors take small batches to get steps.
    # NFN at its published widths needs ~4 s a batch here, so the CPU run narrows it.
    "cpu": Size(models=200, epochs=3, max_images=4000, max_test_images=2000, zoo_batch=64,
                eval_train_images=2000, train_batch=16, train_epochs=30, patience=8, lr=1e-3,
                hyper={"nfn_np": {"hchannels": (8, 8), "head_hidden": 128},
                       "nfn_hnp": {"hchannels": (8, 8), "head_hidden": 128}}),
    # The GPU run: 2,000 networks a zoo, 20 epochs on the full training sets (protocol batch 512).
    "full": Size(models=2000, epochs=20, max_images=None, max_test_images=None, zoo_batch=512,
                 eval_train_images=10_000, train_batch=64, train_epochs=100, patience=15, lr=1e-3),
}


def build_zoos(args, size: Size) -> list[str]:
    from sne_core.data import load_dataset
    from sne_core.store import ZooStore
    from sne_core.zoo import ZooConfig, build_zoo
    store, zoos = ZooStore(args.store), []
    for arch in args.archs:
        for dataset in args.datasets:
            data = load_dataset(dataset, args.data_root, max_train=size.max_images, max_test=size.max_test_images)
            config = ZooConfig(dataset=dataset, arch=arch, n_models=size.models, epochs=size.epochs, seed=args.zoo_seed,
                               batch_size=size.zoo_batch, max_images=size.max_images,
                               max_test_images=size.max_test_images, eval_train_images=size.eval_train_images,
                               device=args.device)
            print(build_zoo(config, data, store, progress=not args.quiet).format(), flush=True)
            zoos.append(f"{dataset}/{arch}")
    return zoos


def _evaluate_one(job):
    """One (method, training zoo): every seed, scored on every zoo. Runs in a worker process."""
    import torch
    from sne_core.protocols import evaluate
    from sne_core.store import ZooStore
    from sne_core.train import TrainConfig
    method, train_zoo, zoos, seeds, store_root, size, device, threads, checkpoints = job
    torch.set_num_threads(threads)
    config = TrainConfig(method=method, epochs=size.train_epochs, batch_size=size.train_batch, lr=size.lr,
                         patience=size.patience, device=device, hyper=dict(size.hyper.get(method, {})),
                         train_checkpoints=checkpoints)
    t0 = time.time()
    raw = evaluate(method, ZooStore(store_root), train_zoo, zoos, seeds, config)
    print(f"  {method:9s} trained on {train_zoo:20s} {time.time() - t0:7.1f} s", flush=True)
    return raw


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--out", required=True, help="folder for the tables (created)")
    p.add_argument("--store", default=None, help="weight store root (default: <out>/store)")
    p.add_argument("--data-root", default="data/datasets")
    p.add_argument("--datasets", default="mnist,fashion_mnist,digits")
    p.add_argument("--archs", default="arch1,arch2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--zoo-seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)), help="predictor trainings in parallel (CPU)")
    p.add_argument("--train-checkpoints", choices=("final", "all"), default="final",
                   help="predictors learn from the training networks' final checkpoints (SPEC) or all of them")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.datasets, args.archs = args.datasets.split(","), args.archs.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.store = args.store or str(out / "store")
    size = SIZES[args.size]

    import pandas as pd
    import torch
    from sne_core.results import write_results

    t0 = time.time()
    zoos = build_zoos(args, size)
    t_zoos = time.time() - t0
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    jobs = 1 if cuda else max(1, args.jobs)
    threads = 1 if jobs > 1 else max(1, torch.get_num_threads())
    work = [(m, z, zoos, list(range(args.seeds)), args.store, size, args.device, threads, args.train_checkpoints)
            for m in args.methods.split(",") for z in zoos]
    if jobs == 1:
        raws = [_evaluate_one(w) for w in work]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            raws = list(pool.map(_evaluate_one, work))
    raw = pd.concat(raws, ignore_index=True)
    meta = {"size": args.size, **asdict(size), "train_checkpoints": args.train_checkpoints, "zoos": zoos,
            "methods": args.methods.split(","), "seeds": args.seeds,
            "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
            "wall_s_zoos": round(t_zoos, 1), "wall_s_total": round(time.time() - t0, 1),
            "command": " ".join([sys.executable, *sys.argv])}
    write_results(out, raw, meta)
    print((out / "tables.md").read_text())
    print(f"wall time: zoos {t_zoos:.0f} s, total {time.time() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
