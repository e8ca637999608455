"""Build the zoos, train SNE and every baseline, and write the paper's three result tables.

    python scripts/paper_tables.py --size cpu  --out results/cpu     # 2-core CPU, ~1 hour
    python scripts/paper_tables.py --size cpu-large --out results/cpu-large --budget-s 7200   # ~6 h in parts
    python scripts/paper_tables.py --size cpu-pass --out results/cpu-pass --budget-s 7200     # every image once, ~12 h
    python scripts/paper_tables.py --size full --out $OUT            # one GPU call (see docs/RESULTS.md)

Library only (sne_core): it runs on the bare GPU image, which has torch but no Dagster, MLflow or
DuckDB. Each (method, training zoo, seed) is trained once and scored on the test split of every
zoo; the in-distribution, cross-dataset and cross-architecture tables are cut from those rows.
Everything resumes: rerun the same command after an interruption and it trains only what is
missing, networks (the store) and (method, training zoo) jobs, seed by seed (their rows are kept in
--out/jobs-<key>/, key = the settings that decide the rows; each job's file is named with its
method's library defaults, `sne_core.methods.defaults_fingerprint`, so a changed default trains that method again;
`<job>.seed<N>.csv` holds one finished seed, so a job stopped between seeds goes on at its next, and
`<job>.fits/seed<N>/` a seed's finished fits, an ensemble's member by member, and the fit in progress after
each epoch, until the seed is done).
`--budget-s S` starts no new zoo unit, seed or fit after S seconds, stops a fit in progress at its first epoch end
past S, and exits with status 3 when something is left: that is how a time-limited device call stops cleanly
before it is killed; call it again to go on.
Ctrl-C or `kill` (SIGINT or SIGTERM, to the process or its group) stops a call at once, mid-zoo-unit or mid-fit:
what was finished stays (a fit's last finished epoch too), the call's wall time goes to calls.json marked
`interrupted`, and it exits with status 130.
`--partial` writes the tables of the finished jobs when some are left (run.json names the rest).
Outputs in --out:
in_distribution.csv, cross_dataset.csv, cross_architecture.csv (the columns of docs/results/),
raw.csv (one row per seed and cell), tables.md, run.json (with every call's wall time; wall_s_total
sums them, wall_s_elapsed counts calls that ran side by side once) and predictions.parquet (every test
network's predicted and true accuracy, for analysis and composites without a refit).
"""
from __future__ import annotations

import argparse
import calendar
import fcntl
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The paper's rows, then the composite `sne_statnn` (SNE + StatNN, mean logit; docs/RESULTS.md,
# session 8). A composite whose parts are in the run costs nothing: it is made from their saved
# predictions, what a refit gives to float rounding (`_compose_one`), so the GPU budget goes to the parts.
METHODS = ("sne", "mlp", "deepsets", "statnn", "gbm", "nfn_np", "nfn_hnp", "sne_statnn")


@dataclass(frozen=True)
class Size:
    """How big the zoos and how long the predictors train (*choose*; see the reasons below)."""
    models: int
    epochs: int | None        # zoo epochs; None = set per dataset by `images_seen`
    max_images: int | None
    max_test_images: int | None
    zoo_batch: int            # protocol: 512; a CPU zoo sees few images, so smaller batches give it enough steps
    eval_train_images: int
    train_batch: int          # networks per predictor step
    train_epochs: int
    patience: int
    lr: float
    hyper: dict = field(default_factory=dict)   # method -> predictor hyperparameters over its defaults
    images_seen: int | None = None   # zoo budget in training images, for sizes with epochs=None

    def __post_init__(self):
        if (self.epochs is None) == (self.images_seen is None):
            raise ValueError(f"Size: set exactly one of fields 'epochs' and 'images_seen', got {self.epochs!r} "
                             f"and {self.images_seen!r}")

    def zoo_epochs(self, n_train: int) -> int:
        """Epochs of a zoo whose (capped) training set has n_train images."""
        from sne_core.zoo import epochs_for_images
        return self.epochs if self.images_seen is None else epochs_for_images(self.images_seen, n_train)

    def train_config(self, method: str, hyper: dict | None = None, **kw):
        """The TrainConfig this size gives `method`; `hyper` goes over the size's own hyperparameters."""
        from sne_core.methods import hyper_for, merge_hyper
        from sne_core.train import TrainConfig
        return TrainConfig(method=method, epochs=self.train_epochs, batch_size=self.train_batch, lr=self.lr,
                           patience=self.patience, hyper=merge_hyper(method, hyper_for(method, self.hyper), hyper), **kw)


SIZES = {
    # Seconds: tests run the whole script on it (build, train, write, then `sne import-results`).
    "smoke": Size(models=8, epochs=1, max_images=256, max_test_images=256, zoo_batch=64,
                  eval_train_images=256, train_batch=4, train_epochs=2, patience=2, lr=1e-3),
    # 200 networks a zoo (the SNE issue's floor), 3 epochs over 4,000 images: ~10 minutes a MNIST
    # zoo on 2 cores. 80 training networks a zoo, so predictors take small batches to get steps.
    # Patience 15, not 8: with its log-magnitude channel, SNE on a 400-network training split stopped
    # at epoch 18 with patience 8, and with 15 found a better epoch at 30 (docs/RESULTS.md).
    # NFN at its published widths needs ~4 s a batch here, so the CPU run narrows it.
    "cpu": Size(models=200, epochs=3, max_images=4000, max_test_images=2000, zoo_batch=64,
                eval_train_images=2000, train_batch=16, train_epochs=60, patience=15, lr=1e-3,
                hyper={"nfn_np": {"hchannels": (8, 8), "head_hidden": 128},
                       "nfn_hnp": {"hchannels": (8, 8), "head_hidden": 128}}),
    # Issue 3's bar (tau >= 0.8) on CPU-built zoos. Learning curves on 1,000-network 10-epoch zoos
    # gained ~0.04 tau per doubling of training networks and reached 0.77 at 400 (docs/RESULTS.md),
    # so this size gives each zoo 800 training networks: 2,000 networks, 10 epochs over the `cpu`
    # size's 4,000 images. Since session 7 (one network at a time in CPU evaluation, 2 zoo workers) the
    # build is ~30 min per 2,000 MNIST Arch1 networks on 2 cores, ~3 h for the six zoos (estimate), and the
    # predictors ~3 h more; --budget-s stops cleanly and a rerun resumes, but only while the store is kept.
    # Measured since: 800 training networks leave SNE alone at 0.76-0.79 on MNIST/Arch1; 1,600 (a 4,000-network zoo)
    # gave 0.811 (docs/RESULTS.md, session 9). models=4000 here would double every build and SNE fit: ~12 h on 2 cores.
    "cpu-large": Size(models=2000, epochs=10, max_images=4000, max_test_images=2000, zoo_batch=64,
                      eval_train_images=2000, train_batch=16, train_epochs=60, patience=15, lr=1e-3,
                      hyper={"nfn_np": {"hchannels": (8, 8), "head_hidden": 128},
                             "nfn_hnp": {"hchannels": (8, 8), "head_hidden": 128}}),
    # cpu-large's predictors on zoos that see every training image once rather than 4,000 images ten
    # times: 60,000 images a network, so 1 epoch over MNIST and Fashion-MNIST, 42 over digits' 1,438
    # (`epochs_for_images`). On paired 1,000-network MNIST zoos it lifted SNE, StatNN and GBM by +0.02 to
    # +0.04 tau at 400 training networks and stopped the networks overfitting (docs/RESULTS.md, session
    # 24). At 2,000 networks (800 training) SNE reached 0.817 on MNIST/Arch1 and 0.763 on Arch2 (session 25),
    # but only 0.698 on Fashion-MNIST/Arch1, where StatNN and GBM reach 0.80 (session 26).
    # Why not longer: three passes (images_seen=180,000) over the same 400 Fashion-MNIST/Arch1 networks lowered
    # test tau at 160 training networks for SNE (-0.058), StatNN (-0.056) and GBM (-0.030): the learned networks
    # bunch up and fewer easy pairs remain (docs/RESULTS.md, session 34).
    # Each network trains ~1.5x longer than at cpu-large: ~75 min per 2,000 MNIST Arch1 networks and
    # ~100 min for Arch2 on 2 cores, ~9 h for the six zoos (estimate from those two). max_images=60,000 caps
    # nothing here (no offline dataset is larger) but is the protocol sessions 24-25 built their MNIST zoos
    # with (`sne zoo --max-images 60000`), so their stores grow and resume under this size.
    "cpu-pass": Size(models=2000, epochs=None, images_seen=60_000, max_images=60_000, max_test_images=2000,
                     zoo_batch=64, eval_train_images=2000, train_batch=16, train_epochs=60, patience=15, lr=1e-3,
                     hyper={"nfn_np": {"hchannels": (8, 8), "head_hidden": 128},
                            "nfn_hnp": {"hchannels": (8, 8), "head_hidden": 128}}),
    # The GPU run: 2,000 networks a zoo, 20 epochs on the full training sets (protocol batch 512).
    # SNE keeps h = 32 here too: h = 64 / 4 heads gained +0.010 tau on every seed with 400 training
    # networks, but -0.017 and +0.006 on two seeds with 800 (docs/RESULTS.md, session 7), so the
    # wider encoder is not shown to help at this size. On a card it is cheap to try with
    # `--hyper '{"sne": {"hidden": 64, "heads": 4}}'` (here, learning_curve.py, device_run.sh's HYPER).
    "full": Size(models=2000, epochs=20, max_images=None, max_test_images=None, zoo_batch=512,
                 eval_train_images=10_000, train_batch=64, train_epochs=100, patience=15, lr=1e-3),
}


INCOMPLETE = 3          # exit status: out of --budget-s with work left; rerun the same command
INTERRUPTED = 130       # exit status: stopped by SIGINT or SIGTERM (128 + SIGINT, as after Ctrl-C); rerun to resume
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"   # calls.json's started_utc


def build_zoos(args, size: Size, deadline: float | None) -> tuple[list[str], bool]:
    """(zoo names, whether every zoo is complete). Builds nothing new after `deadline`."""
    from sne_core.data import load_dataset
    from sne_core.store import ZooStore
    from sne_core.zoo import ZooConfig, build_zoo, default_workers
    store, zoos, complete = ZooStore(args.store), [], True
    for arch in args.archs:
        for dataset in args.datasets:
            zoos.append(f"{dataset}/{arch}")
            if len(store.completed_ids(dataset, arch)) >= size.models:
                print(f"zoo {dataset}/{arch}: complete in the store", flush=True)
                continue
            if deadline is not None and time.time() >= deadline:
                complete = False
                continue
            data = load_dataset(dataset, args.data_root, max_train=size.max_images, max_test=size.max_test_images)
            config = ZooConfig(dataset=dataset, arch=arch, n_models=size.models, epochs=size.zoo_epochs(len(data.y_train)),
                               seed=args.zoo_seed, batch_size=size.zoo_batch, max_images=size.max_images,
                               max_test_images=size.max_test_images, eval_train_images=size.eval_train_images,
                               device=args.device, workers=args.zoo_workers or default_workers(args.device))
            summary = build_zoo(config, data, store, progress=not args.quiet, deadline=deadline)
            print(summary.format(), flush=True)
            complete &= summary.missing == 0
    return zoos, complete


def jobs_dir(out: Path, args, size: Size, overrides: dict) -> Path:
    """Where finished (method, training zoo) jobs keep their rows: one folder per combination of the
    settings that decide those rows, so a rerun with other settings never reuses stale rows."""
    # the whole TrainConfig (not only the flags), so a changed library default gets new rows too
    config = size.train_config("sne", **overrides).as_dict()
    key = json.dumps([asdict(size), args.seeds, args.zoo_seed, config, args.datasets, args.archs]
                     + ([args.hyper] if args.hyper else [])         # absent when unset: older folders keep their name
                     + ([{"method_train": args.method_train}] if args.method_train else [])
                     + ([{"max_train": args.max_train}] if args.max_train else []),
                     sort_keys=True, default=str)
    return out / f"jobs-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def seed_list(text: str) -> list[int]:
    """--train-seeds: comma-separated seed numbers, sorted and each once."""
    return sorted({int(s) for s in text.split(",")})
seed_list.__name__ = "seed list"    # argparse: "invalid seed list value: 'x'"


def train_overrides(args) -> dict:
    """TrainConfig fields set from the command line (the size sets the rest)."""
    out = {"train_checkpoints": args.train_checkpoints}
    if args.ema_epochs is not None:
        out["ema_epochs"] = args.ema_epochs
    if args.members != 1:
        out["members"] = args.members
    return out


# TrainConfig fields that another flag or the job sets, so --method-train may not: one setting, one flag.
# --members, --ema-epochs and --train-checkpoints are not among them: they set every method, and a per-method
# value wins for its method (e.g. SNE as a 3-member ensemble beside single baselines, docs/RESULTS.md session 38).
OWNED_BY_OTHER_FLAGS = {"method", "seed", "device", "hyper"}


def check_method_train(p: argparse.ArgumentParser, method_train) -> None:
    """--method-train must be {method: {field: value}} with known methods and fields (the values TrainConfig checks)."""
    from dataclasses import fields
    from sne_core.methods import METHODS as KNOWN
    from sne_core.train import TrainConfig
    settable = sorted({f.name for f in fields(TrainConfig)} - OWNED_BY_OTHER_FLAGS)
    if not isinstance(method_train, dict) or not all(isinstance(v, dict) for v in method_train.values()):
        p.error(f"--method-train takes a JSON object {{method: {{field: value}}}}, got {method_train!r}")
    for method, fields_ in method_train.items():
        if method not in KNOWN:
            p.error(f"--method-train: unknown method {method!r} (known: {', '.join(sorted(KNOWN))})")
        unknown = sorted(set(fields_) - set(settable))
        if unknown:
            p.error(f"--method-train: {method} field(s) {unknown} cannot be set here; settable: {', '.join(settable)}")


def job_path(folder: Path, method: str, train_zoo: str) -> Path:
    """A job's rows; the file's presence marks the job done. Named with the method's fingerprint, so a job
    trained under other library defaults is not found (and is trained again)."""
    from sne_core.methods import defaults_fingerprint
    return folder / f"{method}-{defaults_fingerprint(method)}__{train_zoo.replace('/', '__')}.csv"


def predictions_path(folder: Path, method: str, train_zoo: str) -> Path:
    """A job's per-network predictions, written just before its rows (jobs of older runs have none)."""
    return job_path(folder, method, train_zoo).with_suffix(".preds.parquet")


def seed_path(folder: Path, method: str, train_zoo: str, seed: int) -> Path:
    """One seed's rows of a job, written as that seed finishes (its predictions beside it), so a job stopped
    between seeds (the deadline, a killed session) resumes at its next seed: a seed of a 3-member SNE ensemble
    is ~50-105 min on one CPU core at cpu-pass size, a job of 3 seeds longer than a session. The job's file is
    made from them."""
    return job_path(folder, method, train_zoo).with_suffix(f".seed{seed}.csv")


@dataclass(frozen=True)
class Job:
    """One (method, training zoo) to train for every seed and score on every zoo; runs in a worker process."""
    method: str
    train_zoo: str
    zoos: list[str]
    seeds: list[int]      # every seed of the job: its file is made once all of them are done
    train_seeds: list[int]    # those this call trains (--train-seeds; by default every seed)
    store: str
    size: Size
    device: str
    threads: int
    overrides: dict       # TrainConfig fields: the run's, with --method-train's winning for this method
    hyper: dict
    max_train: int | None
    deadline: float | None
    folder: Path


def _evaluate_one(job: Job):
    """One job: every seed, each written as it finishes (`seed_path`), then the job's file made from them."""
    import pandas as pd
    import torch
    from sne_core.protocols import evaluate
    from sne_core.store import ZooStore
    from sne_core.results import (atomic_write_text, predictions_frame, read_predictions, read_raw,
                                  write_predictions)
    from sne_core.train import OutOfTime
    method, train_zoo, folder = job.method, job.train_zoo, job.folder
    torch.set_num_threads(job.threads)
    config = job.size.train_config(method, job.hyper.get(method), device=job.device, **job.overrides)
    fits = job_path(folder, method, train_zoo).with_suffix(".fits")   # each seed's fits: finished ones, and progress
    for seed in job.train_seeds:
        rows = seed_path(folder, method, train_zoo, seed)
        if rows.is_file():
            continue                          # finished by an earlier call
        t0, preds = time.time(), {}
        try:
            raw = evaluate(method, ZooStore(job.store), train_zoo, job.zoos, [seed], config, max_train=job.max_train,
                           on_fit=lambda s, _result, by_zoo: preds.__setitem__(s, by_zoo), keep_fits=fits,
                           deadline=job.deadline)
        except OutOfTime:
            return                            # stopped at the deadline, at a fit's epoch end at the latest: the next call's
        print(f"  {method:9s} trained on {train_zoo:20s} seed {seed} {time.time() - t0:7.1f} s", flush=True)
        write_predictions(rows.with_suffix(".preds.parquet"), predictions_frame(method, train_zoo, preds))
        atomic_write_text(rows, raw.to_csv(index=False))      # last: its presence marks the seed done
        shutil.rmtree(fits / f"seed{seed}", ignore_errors=True)   # its fits are in those rows now
    parts = [seed_path(folder, method, train_zoo, s) for s in job.seeds]
    if not all(f.is_file() for f in parts):
        return                                # another call (--train-seeds) trains the rest and makes the file
    write_predictions(predictions_path(folder, method, train_zoo),
                      pd.concat([read_predictions(f.with_suffix(".preds.parquet")) for f in parts], ignore_index=True))
    atomic_write_text(job_path(folder, method, train_zoo),
                      pd.concat([read_raw(f) for f in parts], ignore_index=True).to_csv(index=False))
    shutil.rmtree(fits, ignore_errors=True)


def _compose_one(folder: Path, method: str, train_zoo: str) -> None:
    """A composite job from its parts' finished jobs (left for a later call if one is missing)."""
    from sne_core.methods import get_method
    from sne_core.protocols import compose
    from sne_core.results import atomic_write_text, read_predictions, read_raw, write_predictions
    parts = get_method(method).parts
    if not all(job_path(folder, q, train_zoo).is_file() for q in parts):
        return
    for q in parts:
        if not predictions_path(folder, q, train_zoo).is_file():
            raise SystemExit(f"{method} on {train_zoo}: its part {q}'s job {job_path(folder, q, train_zoo)} has no saved "
                             "predictions (it ran before paper_tables saved them); delete that file to retrain the "
                             f"part, or leave {method} out of --methods")
    raw, preds = compose(method, [read_raw(job_path(folder, q, train_zoo)) for q in parts],
                         [read_predictions(predictions_path(folder, q, train_zoo)) for q in parts])
    write_predictions(predictions_path(folder, method, train_zoo), preds)
    atomic_write_text(job_path(folder, method, train_zoo), raw.to_csv(index=False))
    print(f"  {method:9s} composed on {train_zoo:20s} from {', '.join(parts)}", flush=True)


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
    p.add_argument("--zoo-workers", type=int, default=None,
                   help="zoo-building worker processes (default: one per core on CPU, 1 on CUDA)")
    p.add_argument("--jobs", type=int, default=None,
                   help="predictor trainings in parallel processes (default: one per core on CPU, 1 on CUDA; "
                        "on a GPU several processes can share the card, each job being small)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new zoo unit, predictor seed or fit after this many seconds, and stop a fit in "
                        "progress at its first epoch end past them (it goes on there next call); exit 3 if work is left")
    p.add_argument("--ema-epochs", type=float, default=None,
                   help="TrainConfig.ema_epochs for every predictor (average its weights over ~N epochs; 0 = raw "
                        "weights; default: TrainConfig's)")
    p.add_argument("--members", type=int, default=1,
                   help="TrainConfig.members for every torch predictor: a deep ensemble of N fits (seeds seed + 1000 i) "
                        "predicting their mean logit (GBM trains one: its seed changes nothing)")
    p.add_argument("--train-checkpoints", choices=("final", "all"), default="final",
                   help="predictors learn from the training networks' final checkpoints (SPEC) or all of them")
    p.add_argument("--hyper", default="{}", type=json.loads,
                   help='per-method predictor hyperparameters over the size\'s, e.g. \'{"sne": {"hidden": 64, "heads": 4}}\'')
    # Per method, unlike learning_curve.py's --train (one setting for every method on one zoo): a table compares
    # methods, and a loss such as SNE's ranking loss (session 37) is measured for SNE only.
    p.add_argument("--method-train", default="{}", type=json.loads,
                   help='per-method TrainConfig fields over the size\'s, e.g. \'{"sne": {"rank_weight": 0.3, "members": 3}}\' '
                        "(over --members, --ema-epochs and --train-checkpoints for that method; not seed, device, hyper)")
    p.add_argument("--max-train", type=int, default=None,
                   help="train every predictor on at most N networks of each zoo's training split, one subset seeded "
                        "by the split seed and shared by every method and seed (default: the whole split). For a store "
                        "whose zoos outgrew the size, e.g. 4,000-network zoos at --size cpu-large, whose 2,000 give 800")
    p.add_argument("--train-zoos", default=None,
                   help="run only the jobs of these training zoos (dataset/arch, comma-separated; every zoo stays a "
                        "test zoo), to split one run across processes or calls; the tables come once every job is done")
    p.add_argument("--train-seeds", default=None, type=seed_list,
                   help="train only these seeds (comma-separated, each below --seeds) of each job, to split one job "
                        "across processes: a 3-member SNE seed is about an hour on one core. The job's file is made "
                        "by the call that finishes its last seed")
    p.add_argument("--partial", action="store_true",
                   help="when jobs are left, still cut the tables from the finished ones (run.json lists the rest "
                        "under jobs_missing; exit status stays 3), e.g. with --budget-s 0 to train nothing new")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.max_train is not None and args.max_train < 1:
        p.error(f"--max-train must be at least 1, got {args.max_train}")
    check_method_train(p, args.method_train)
    # before any zoo is built or checked: a bad seed would otherwise be refused only after that work
    unknown_seeds = sorted(set(args.train_seeds or []) - set(range(args.seeds)))
    if unknown_seeds:
        p.error(f"--train-seeds {unknown_seeds} not among the seeds {list(range(args.seeds))} (--seeds {args.seeds})")
    # SIGTERM (`kill`, a scheduler's stop) as Ctrl-C: the workers are stopped and the call recorded, rather than
    # this process dying alone and its workers training on. (An inherited ignored SIGINT, as `cmd &` in a script
    # sets, is left ignored: that is the launcher's choice.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.datasets, args.archs = args.datasets.split(","), args.archs.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.store = args.store or str(out / "store")
    size = SIZES[args.size]

    import pandas as pd
    import torch
    from sne_core.devices import describe_device
    from sne_core.methods import get_method
    from sne_core.results import read_predictions, read_raw, write_predictions, write_results

    overrides = train_overrides(args)
    folder = jobs_dir(out, args, size, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    t0, t_zoos = time.time(), None

    def record_call(**extra) -> list[dict]:
        total = round(time.time() - t0, 1)
        return _record_call(folder, {"started_utc": time.strftime(UTC_FORMAT, time.gmtime(t0)),
                                     "wall_s_zoos": total if t_zoos is None else round(t_zoos, 1),
                                     "wall_s_total": total, **extra})

    deadline = None if args.budget_s is None else t0 + args.budget_s
    try:
        zoos, complete = build_zoos(args, size, deadline)
    except KeyboardInterrupt:
        return _interrupted(record_call)
    t_zoos = time.time() - t0
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    jobs = max(1, args.jobs if args.jobs is not None else (1 if cuda else (os.cpu_count() or 1)))
    threads = 1 if jobs > 1 else max(1, torch.get_num_threads())
    methods = args.methods.split(",")
    # a composite whose parts this run trains anyway is made from their saved predictions, not refitted
    composed = {m for m in methods if get_method(m).parts and set(get_method(m).parts) <= set(methods)}
    work = [(m, z) for m in methods for z in zoos]
    runs_here = set(zoos) if args.train_zoos is None else set(args.train_zoos.split(","))
    if not runs_here <= set(zoos):
        p.error(f"--train-zoos {sorted(runs_here - set(zoos))} not among the zoos {zoos}")
    seeds = list(range(args.seeds))
    todo = [Job(m, z, zoos, seeds, args.train_seeds or seeds, args.store, size, args.device, threads,
                overrides | args.method_train.get(m, {}), args.hyper, args.max_train, deadline, folder)
            for m, z in work if m not in composed and z in runs_here and not job_path(folder, m, z).is_file()] \
        if complete else []
    if complete:
        done = sum(job_path(folder, m, z).is_file() for m, z in work)
        kept = sum(seed_path(folder, j.method, j.train_zoo, s).is_file() for j in todo for s in j.train_seeds)
        print(f"jobs: {done} of {len(work)} done before this call, {len(todo)} to run, "
              f"{jobs} at a time" + (f", {kept} of their seeds kept from earlier calls" if kept else "")
              + (f", {sorted(composed)} composed from their parts" if composed else ""), flush=True)
    try:
        _run_jobs(todo, jobs)
        for m, z in work if complete else []:
            if m in composed and z in runs_here and not job_path(folder, m, z).is_file():
                _compose_one(folder, m, z)
    except KeyboardInterrupt:
        return _interrupted(record_call)
    calls = record_call()
    finished = [(m, z) for m, z in work if job_path(folder, m, z).is_file()]
    left = [f"{m} on {z}" for m, z in work if (m, z) not in finished]
    if not complete or left:
        print(f"incomplete after {time.time() - t0:.0f} s (--budget-s {args.budget_s}): "
              f"{'zoos unfinished' if not complete else f'{len(left)} jobs left, e.g. {left[0]}'}; "
              "run the same command again to resume", flush=True)
        # --partial: the tables of what is done, when the zoos are complete and one job at least is finished
        if not (args.partial and complete and finished):
            return INCOMPLETE
    raw = pd.concat([read_raw(job_path(folder, m, z)) for m, z in finished], ignore_index=True)
    saved = [predictions_path(folder, m, z) for m, z in finished if predictions_path(folder, m, z).is_file()]
    trained = size.train_config("sne", **overrides)
    meta = {"size": args.size, **asdict(size), "train_checkpoints": trained.train_checkpoints,
            "ema_epochs": trained.ema_epochs, "max_train": args.max_train, "zoos": zoos,
            "methods": methods, "seeds": args.seeds, "hyper": args.hyper, "method_train": args.method_train,
            "device": describe_device(torch.device("cuda" if cuda else "cpu")),
            "wall_s_zoos": round(sum(c["wall_s_zoos"] for c in calls), 1),
            "wall_s_total": round(sum(c["wall_s_total"] for c in calls), 1),
            "wall_s_elapsed": elapsed_s(calls), "calls": calls,
            "predictions_jobs": f"{len(saved)} of {len(work)}", "jobs_missing": left,
            "command": " ".join([sys.executable, *sys.argv])}
    try:
        write_results(out, raw, meta)
        if saved:    # what the jobs saved, in one file beside the tables
            write_predictions(out / "predictions.parquet", pd.concat(map(read_predictions, saved), ignore_index=True))
    except KeyboardInterrupt:
        # the call is recorded and its jobs are on disk; each file is written whole, but the folder may now mix
        # this call's files with an earlier call's, which the next call rewrites
        print(f"interrupted while writing the tables in {out}: every job is kept; run the same command again "
              "to write them", flush=True)
        return INTERRUPTED
    print((out / "tables.md").read_text())
    print(f"wall time: zoos {meta['wall_s_zoos']:.0f} s, total {meta['wall_s_total']:.0f} s "
          f"over {len(calls)} call(s), {meta['wall_s_elapsed']:.0f} s elapsed -> {out}")
    return INCOMPLETE if left else 0


def _run_jobs(todo: list[Job], jobs: int) -> None:
    """Every job, `jobs` at a time in worker processes (in this one when 1)."""
    if not todo:
        return
    if jobs == 1:
        for j in todo:
            _evaluate_one(j)
        return
    # spawn: the parent may hold CUDA (zoo building), which a forked child cannot use
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
    try:
        list(pool.map(_evaluate_one, todo))
    except KeyboardInterrupt:
        # A worker not signalled itself (`kill <pid>` of this process rather than Ctrl-C in a terminal) would finish
        # its whole job first, and a leaving `with` block would even start the queued ones. Little is lost by
        # killing them: finished seeds and fits, and a fit's finished epochs, are on disk, each written atomically.
        pool.shutdown(wait=False, cancel_futures=True)
        for child in mp.active_children():
            child.kill()     # not terminate(): a worker can inherit an ignored SIGTERM (sne_core.zoo.train_zoo)
            child.join()
        raise
    pool.shutdown()


def _interrupted(record_call) -> int:
    """Ctrl-C or SIGTERM: keep the call's wall time (a resumed run's total counts it) and say how to go on."""
    record_call(interrupted=True)
    print("interrupted: finished zoo units, seeds, fits and a fit's finished epochs are kept; "
          "run the same command again to resume", flush=True)
    return INTERRUPTED


def _record_call(folder: Path, call: dict) -> list[dict]:
    """Append this call's wall times to the jobs folder's calls.json (a resumed run spans several calls).
    Calls split by --train-zoos or --train-seeds may finish at the same moment: a lock keeps each one's entry."""
    from sne_core.results import atomic_write_text
    path = folder / "calls.json"
    with open(folder / "calls.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        calls = json.loads(path.read_text()) if path.is_file() else []
        calls.append(call)
        atomic_write_text(path, json.dumps(calls, indent=1))
    return calls


def elapsed_s(calls: list[dict]) -> float:
    """Seconds during which any call ran: calls run side by side (--train-zoos, --train-seeds) count once, so this is
    the run's wall-clock time where wall_s_total, their sum, is its process time."""
    starts = [calendar.timegm(time.strptime(c["started_utc"], UTC_FORMAT)) for c in calls]
    spans = sorted((start, start + c["wall_s_total"]) for start, c in zip(starts, calls))
    total, end = 0.0, -math.inf
    for a, b in spans:
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return round(total, 1)


if __name__ == "__main__":
    sys.exit(main())
