"""How much does each predictor gain from more training networks? A learning curve on one zoo.

    python scripts/learning_curve.py --store results/store --zoo mnist/arch1 --sizes 40,80,200,400
    python scripts/learning_curve.py --store results/store --zoo mnist/arch2 --sizes 800 --methods sne --train '{"lr": 0.0005}'

Validation and test are the zoo's stored split (final checkpoints), the same for every size, so
the sizes differ only in how many training networks the predictor sees. The training networks of
size n are the first n of one seeded permutation of the split's training part (per predictor
seed), so a larger size holds every network of a smaller one. Predictors train with the settings
of `paper_tables.py --size` (default: cpu). Library only, like paper_tables.py.

Why it exists: every method's in-distribution tau on the 200-network CPU zoos is far below the
published numbers, and this is the measurement that says whether zoo size is what holds them back
(docs/RESULTS.md, "What moves tau"). Prints one row per (method, size) and writes curve.csv
(one row per method, size and seed) to --out when given, one fit at a time: a curve that is stopped
keeps its finished fits, and the same command again trains only the missing ones (curve.json beside
it holds the settings, and a call with other settings is refused); the fits themselves are kept in
--out/fits, so a fit stopped mid-way goes on at its last finished epoch. Each row also splits the test tau into
its parts within the collapsed networks (test accuracy < 0.2), within the learned ones and across
the two (`tau_below`, `tau_above`, `tau_across`: `sne_core.metrics.tau_by_region`), and scores the returned
model on its own training networks (`train_tau`, `train_tau_above`): whether it under- or overfits.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields, replace
from pathlib import Path

from paper_tables import SIZES   # scripts/ is on sys.path when this file runs as a script
from sne_core.results import atomic_write_text

REGIONS = ("below", "above", "across")   # the parts of tau kept per fit, see _fit_one
KEY = ["method", "n_train", "seed"]        # one fit of the curve


def subsample(data, n: int, seed: int):
    """The first n networks of a seeded permutation of `data` (a ZooData), in their stored order."""
    import torch
    from sne_core.protocols import seeded_subset
    if n > len(data):
        raise SystemExit(f"learning_curve: --sizes asks for {n} training networks, but {data.zoo} has {len(data)}")
    return data.subset(torch.from_numpy(seeded_subset(len(data), n, seed)), zoo=f"{data.zoo}[{n}]")


def _fit_one(job) -> dict:
    """One (method, size, seed): train on n networks, score on the zoo's test split. Runs in a worker."""
    import torch
    from sne_core.metrics import summarize, tau_by_region
    from sne_core.protocols import load_zoo
    from sne_core.store import ZooStore
    from sne_core.train import fit, predict
    method, n, seed, store_root, zoo, size_name, threads, hyper, members, train_over, keep = job
    torch.set_num_threads(threads)
    size, store = SIZES[size_name], ZooStore(store_root)
    train = subsample(load_zoo(store, zoo, "train"), n, seed)
    val, test = load_zoo(store, zoo, "val"), load_zoo(store, zoo, "test")
    config = replace(size.train_config(method, hyper.get(method), seed=seed, members=members), **train_over)
    result = fit(config, train, val, keep_fits=keep)   # keep: a stopped fit goes on at its last epoch end

    def scores(model, prefix: str = "", data=test) -> dict:
        # tau-a within the collapsed and the learned networks and across them (metrics.tau_by_region)
        pred = predict(model, data)
        regions = {f"{prefix}tau_{k}": v for k, v in tau_by_region(pred, data.y.numpy()).items() if k in REGIONS}
        return {f"{prefix}{k}": v for k, v in summarize(pred, data.y.numpy()).items()} | regions

    metrics = scores(result.model)
    # The same model on its own training networks: train tau near test tau means the predictor underfits
    # (SNE on the Fashion-MNIST zoos, docs/RESULTS.md session 33), far above it means it overfits.
    fitted = scores(result.model, "train_", train)
    metrics |= {k: fitted[k] for k in ("train_tau", "train_tau_above")}
    # an ensemble's members on their own too (a composite's parts by name): what the ensemble adds
    alone = {}
    for name, r in zip(result.member_names, result.members):
        part = scores(r.model, f"{name}_")
        alone.update({k: part[k] for k in (f"{name}_tau", f"{name}_r2", f"{name}_tau_above")})
        alone[f"{name}_val_tau"] = r.val.get("tau")
    print(f"  {method:8s} n_train={n:4d} seed={seed} tau={metrics['tau']:.3f} train_tau={metrics['train_tau']:.3f} "
          f"({result.seconds:.0f} s)"
          + "".join(f" {k}={v:.3f}" for k, v in alone.items() if k.endswith(("_tau", "_above"))), flush=True)
    return {"method": method, "zoo": zoo, "n_train": n, "seed": seed, "members": members, **metrics, **alone,
            "val_tau": result.val.get("tau"), "n_val": len(val), "n_test": len(test), "fit_seconds": result.seconds}


def settings(args) -> dict:
    """What a curve's rows depend on besides (method, size, seed): a resumed curve must share them."""
    return {"store": str(Path(args.store).resolve()), "zoo": args.zoo, "size": args.size, "hyper": args.hyper,
            "members": args.members, "train": args.train}


def finished_fits(out: Path, current: dict):
    """The rows of an earlier call into `out` (none on a new folder); refuses a folder of other settings."""
    import pandas as pd
    out.mkdir(parents=True, exist_ok=True)
    meta, curve = out / "curve.json", out / "curve.csv"
    if not meta.exists():
        if curve.exists():
            raise SystemExit(f"learning_curve: {curve} has no {meta.name} beside it, so its settings are unknown; "
                             "use another --out")
        atomic_write_text(meta, json.dumps(current, indent=1, sort_keys=True))
        return pd.DataFrame(columns=KEY)
    try:
        earlier = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"learning_curve: {meta} is not JSON ({e})") from None
    for field, value in current.items():
        if earlier.get(field) != value:
            raise SystemExit(f"learning_curve: {meta}: field '{field}' is {earlier.get(field)!r} there but "
                             f"{value!r} in this call; use the same settings or another --out")
    if not curve.exists():
        return pd.DataFrame(columns=KEY)
    rows = pd.read_csv(curve)
    missing = [c for c in KEY + ["tau"] if c not in rows.columns]
    if missing:
        raise SystemExit(f"learning_curve: {curve} lacks column(s) {missing}; expected one row per {KEY} with its tau")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="weight store root holding the zoo")
    p.add_argument("--zoo", required=True, help="dataset/arch, e.g. mnist/arch1")
    p.add_argument("--sizes", default="40,80,200,400", help="training-network counts, comma-separated")
    p.add_argument("--methods", default="sne,statnn,gbm")
    p.add_argument("--seeds", type=int, default=3, help="predictor seeds per (method, size)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds run from here: --first-seed 2 --seeds 1 adds seed 2 to an earlier 0..1 run")
    p.add_argument("--size", choices=sorted(SIZES), default="cpu", help="predictor training settings of paper_tables.py")
    p.add_argument("--jobs", type=int, default=2, help="trainings in parallel (processes, one thread each)")
    p.add_argument("--out", default=None, help="folder for curve.csv")
    p.add_argument("--hyper", default="{}", type=json.loads,
                   help='per-method predictor hyperparameters over the size\'s, e.g. \'{"sne": {"log_floor": 0}}\'')
    p.add_argument("--members", type=int, default=1,
                   help="TrainConfig.members for the torch methods: a deep ensemble of N fits, mean logit")
    p.add_argument("--train", default="{}", type=json.loads,
                   help='TrainConfig fields over the size\'s, for every method, e.g. \'{"lr": 0.0005, "invariance_weight": 0}\'')
    args = p.parse_args(argv)
    import pandas as pd
    from sne_core.train import TrainConfig
    settable = {f.name for f in fields(TrainConfig)} - {"method", "seed", "hyper", "members"}   # set by the other flags
    if not isinstance(args.train, dict) or set(args.train) - settable:
        raise SystemExit(f"learning_curve: --train takes a JSON object of TrainConfig fields {sorted(settable)}; "
                         f"got {args.train!r}")

    sizes = sorted(int(s) for s in args.sizes.split(","))
    out = Path(args.out) if args.out else None
    done = finished_fits(out, settings(args)) if out else pd.DataFrame(columns=KEY)
    kept = set(map(tuple, done[KEY].itertuples(index=False)))
    # largest first: the long SNE fits start early and the small ones fill the gaps at the end
    jobs = [(m, n, s, args.store, args.zoo, args.size, 1, args.hyper, args.members, args.train,
             out and str(out / "fits" / f"{m}-n{n}-seed{s}"))
            for n in reversed(sizes) for m in args.methods.split(",")
            for s in range(args.first_seed, args.first_seed + args.seeds) if (m, n, s) not in kept]
    if kept:
        print(f"{len(kept)} fits kept from {out / 'curve.csv'}, {len(jobs)} to train", flush=True)
    t0, rows = time.time(), done.to_dict("records")
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for future in as_completed([pool.submit(_fit_one, job) for job in jobs]):
            rows.append(future.result())
            if out:   # after every fit: a stopped curve keeps every finished row (and --out/fits the fits in progress)
                atomic_write_text(out / "curve.csv", pd.DataFrame(rows).sort_values(KEY).to_csv(index=False))
    rows = pd.DataFrame(rows).sort_values(KEY, ignore_index=True)
    rows = rows[rows.method.isin(args.methods.split(",")) & rows.n_train.isin(sizes)]   # this call's part of the curve
    table = rows.groupby(["method", "n_train"]).agg(tau_mean=("tau", "mean"), tau_std=("tau", "std"),
                                                    r2_mean=("r2", "mean"), above_mean=("tau_above", "mean"),
                                                    train_tau_mean=("train_tau", "mean"),
                                                    seeds=("seed", "count"))
    print(f"zoo {args.zoo}: validation {rows.n_val.iloc[0]} networks, test {rows.n_test.iloc[0]} networks")
    print(table.round(3).to_string())
    print(f"wall time {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
