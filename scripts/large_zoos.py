"""Issue 3's bar on every zoo: six CPU-protocol zoos of 4,000 networks, predictors on 1,600 training networks each.

    python scripts/large_zoos.py --out results/large-zoos [--models 4000] [--budget-s 540] [--jobs 13]

The zoos are those of `paper_tables.py --size cpu-large` (10 epochs over 4,000 images, batch 64: zoos a
2-core CPU can build), with twice the networks: 4,000, so the default split (50% test, the rest 80/20)
gives 1,600 training, 400 validation and 2,000 test networks. On MNIST/Arch1 that size took SNE over 0.8
(docs/RESULTS.md, sessions 9 and 18); building the other five on 2 cores takes about 8 hours, so this
script is meant for the GPU call (`TASK=large_zoos bash scripts/device_run.sh`), but runs anywhere.

Pipelined, because a device call is short: the zoos are built one after another in this process, and as
soon as one is complete its fits start in a pool of worker processes (spawned: this process holds CUDA)
beside the next build. Each fit is `learning_curve.py`'s (method, size, seed) fit at `--size cpu-large`
on the whole training split, scored on the zoo's test split. Every finished fit is appended at once to
--out/rows.csv, and a rerun skips the fits found there and resumes unfinished zoos from the store; the fits
in flight save their state after every epoch under --out/fits, so a call cut short loses at most an epoch
of each. --budget-s: no new zoo unit after it, and at it the fits
still running are stopped (exit 3: call again to go on). Prints mean ± std test tau per (zoo, method).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from learning_curve import _fit_one                  # scripts/ is on sys.path when this file runs as a script
from paper_tables import INCOMPLETE, SIZES, build_zoos

# Zoos in the order they are built: the five not yet at 1,600 training networks first, MNIST/Arch1
# (measured on the CPU, docs/RESULTS.md session 18) last, so a call cut short loses the one already known.
ZOOS = ("fashion_mnist/arch1", "digits/arch1", "mnist/arch2", "fashion_mnist/arch2", "digits/arch2", "mnist/arch1")
SIZE = "cpu-large"           # the zoo protocol and predictor settings; only the number of networks differs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--store", default=None, help="weight store root (default: <out>/store)")
    p.add_argument("--data-root", default="data/datasets")
    p.add_argument("--zoos", default=",".join(ZOOS))
    p.add_argument("--models", type=int, default=4000, help="networks per zoo")
    p.add_argument("--n-train", type=int, default=None,
                   help="training networks per fit (default: the whole training split, 1,600 at 4,000 networks)")
    p.add_argument("--methods", default="sne:3,statnn:1,gbm:1",
                   help="method:seeds, comma-separated (GBM is deterministic: one seed)")
    p.add_argument("--jobs", type=int, default=13, help="fits in parallel (processes of one thread each)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop the fits still running after this many seconds (exit 3: call again to resume)")
    p.add_argument("--reserve-s", type=float, default=150,
                   help="with --budget-s: start no zoo unit in its last this-many seconds (a zoo finished then "
                        "would have no time left for its fits)")
    p.add_argument("--size", choices=sorted(SIZES), default=SIZE,
                   help="paper_tables.py size for the zoo protocol and predictor settings (smoke: a check in seconds)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = args.store or str(out / "store")
    methods = [(m, int(s)) for m, s in (item.split(":") for item in args.methods.split(","))]
    size = replace(SIZES[args.size], models=args.models)

    import pandas as pd
    from sne_core.protocols import parse_zoo
    from sne_core.results import atomic_write_text
    from sne_core.splits import get_or_create_split, split_counts
    from sne_core.store import ZooStore

    t0 = time.time()
    deadline = None if args.budget_s is None else t0 + args.budget_s
    build_deadline = None if deadline is None else deadline - args.reserve_s
    rows_path = out / "rows.csv"
    rows = pd.read_csv(rows_path).to_dict("records") if rows_path.is_file() else []
    done = {(r["zoo"], r["method"], r["seed"]) for r in rows}
    pending, failed = [], []

    def record(row: dict) -> None:              # runs in the pool's one result thread: a single writer
        rows.append(row)
        atomic_write_text(rows_path, pd.DataFrame(rows).to_csv(index=False))

    def report(e: BaseException) -> None:
        failed.append(repr(e))       # fail fast: the zoos left are not built (a device call is too short to waste)
        print(f"fit failed: {e!r}", flush=True)

    pool = mp.get_context("spawn").Pool(max(1, args.jobs))
    complete = True
    for zoo in args.zoos.split(","):
        if failed:
            break
        dataset, arch = parse_zoo(zoo)
        build_args = SimpleNamespace(store=store, datasets=[dataset], archs=[arch], zoo_seed=0, device=args.device,
                                     zoo_workers=None, data_root=args.data_root, quiet=args.quiet)
        t = time.time()
        _, built = build_zoos(build_args, size, build_deadline)
        if not built:
            complete = False
            print(f"zoo {zoo}: out of budget before it was complete; its fits wait for the next call", flush=True)
            continue
        split = get_or_create_split(ZooStore(store), dataset, arch)   # here, not raced by the fits
        print(f"zoo {zoo}: ready after {time.time() - t:.0f} s ({time.time() - t0:.0f} s in); split "
              + " ".join(f"{k}={v}" for k, v in split_counts(split).items()), flush=True)
        n_train = args.n_train or split_counts(split)["train"]
        for m, seeds in methods:
            for s in range(seeds):
                if (zoo, m, s) not in done:
                    keep = str(out / "fits" / f"{zoo.replace('/', '_')}-{m}-n{n_train}-seed{s}")   # resumes at an epoch end
                    job = (m, n_train, s, store, zoo, args.size, 1, {}, 1, {"device": args.device}, keep)
                    pending.append(pool.apply_async(_fit_one, (job,), callback=record, error_callback=report))
    pool.close()
    for r in pending:                            # wait, but not past the budget, nor after a failure
        while not r.ready() and not failed and (deadline is None or time.time() < deadline):
            r.wait(1.0)
    unfinished = sum(not r.ready() for r in pending)
    pool.terminate()
    pool.join()

    if rows:
        table = pd.DataFrame(rows).groupby(["zoo", "method"], sort=False).agg(
            tau_mean=("tau", "mean"), tau_std=("tau", "std"), val_tau=("val_tau", "mean"), r2=("r2", "mean"),
            l1=("l1", "mean"), seeds=("seed", "count"), fit_s=("fit_seconds", "mean"))
        table.round(4).to_csv(out / "summary.csv")
        print(table.round(3).to_string())
    print(f"wall {time.time() - t0:.0f} s; fits unfinished {unfinished}, failed {len(failed)}; zoos complete: {complete}")
    return INCOMPLETE if (unfinished or not complete or failed) else 0


if __name__ == "__main__":
    sys.exit(main())
