"""Zoo training: many small networks, each with its own sampled hyperparameters (SPEC §2).

    config = ZooConfig("mnist", "arch1", n_models=64, epochs=3)
    results = train_zoo(config, load_dataset("mnist", root))       # list[NetworkResult]
    summary = build_zoo(config, data, ZooStore("data/store"))       # trains what the store lacks

Two strategies train the same networks (see `sne_core.zoo_network` for the per-network seeding):
  "loop"       one network at a time, nn.Module + torch.optim (`zoo_network.train_network`);
  "vectorized" a group of networks per step, grouped convolutions (`zoo_vectorized.train_group`).
"auto" times a few steps of each on the first unit and keeps the faster, cached on disk per
(device, arch, group size, batch, amp): which one wins depends on the machine and architecture
(on a 2-core CPU a small grouped step can beat the loop for Arch1; on a GPU hundreds of
networks per step win by far).

Units. Networks are assigned to units by a fixed rule over the whole zoo (model ids in order, cut
into `group_size` pieces), never by which networks are missing, so a rerun after an interruption
trains exactly the same groups. A unit mixes train fractions (a zoo of 8 would otherwise split
into groups of 2); `train_group` computes each step only for the networks still in their epoch.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sne_core.archs import Arch, get_arch
from sne_core.devices import describe_device, resolve_device
from sne_core.hparams import HParams, sample_network
from sne_core.records import STATUS_DIVERGED, NetworkResult
from sne_core.zoo_network import RunSpec, TrainData, steps_per_epoch, train_network
from sne_core.zoo_vectorized import train_group

PROTOCOL_CHECKPOINTS = (0, 1, 2, 3, 20, 40, 60, 80, 86)   # Small CNN Zoo protocol
STRATEGIES = ("auto", "loop", "vectorized")
# Networks per vectorised step, per device type: the prototype's H200 throughput plateaued from
# 128 to 1,024 networks; on CPU small groups keep the per-step working set in cache.
DEFAULT_GROUP_SIZE = {"cuda": 512, "cpu": 4}
CALIBRATION_STEPS = 2


@dataclass
class ZooConfig:
    dataset: str
    arch: str                                   # a name known to sne_core.archs.get_arch
    n_models: int
    epochs: int
    seed: int = 0                               # zoo seed: with model_id it determines every network
    batch_size: int = 512
    checkpoint_epochs: tuple[int, ...] | None = None   # None = protocol list clipped to `epochs`
    max_images: int | None = None               # cap on the training set (before train_fraction)
    max_test_images: int | None = None
    eval_train_images: int | None = 10_000      # train acc/loss on this many of the network's own images:
                                                # a 10k sample pins accuracy to ~0.5% at a sixth of the cost
    device: str = "auto"                        # "auto" = cuda if available
    strategy: str = "auto"
    group_size: int | None = None               # None = DEFAULT_GROUP_SIZE for the device
    amp: str = "none"                           # "bf16": autocast on CUDA (ignored on CPU)
    workers: int | None = None                  # CPU worker processes (None = 1, in process); CUDA uses 1

    def __post_init__(self) -> None:
        zoo = f"zoo config {self.dataset}/{self.arch}"
        for name in ("n_models", "epochs", "batch_size", "max_images", "max_test_images", "eval_train_images",
                     "group_size", "workers"):
            v, lo = getattr(self, name), (0 if name == "epochs" else 1)
            optional = name not in ("n_models", "epochs", "batch_size")
            if (v is None and not optional) or (v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo)):
                raise ValueError(f"{zoo}: field {name!r} must be an integer >= {lo}{' or None' if optional else ''}, got {v!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"{zoo}: field 'strategy' must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.amp not in ("none", "bf16"):
            raise ValueError(f"{zoo}: field 'amp' must be 'none' or 'bf16', got {self.amp!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as e:
                raise ValueError(f"{zoo}: field 'device' must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}") from e
        if self.checkpoint_epochs is not None:
            eps = tuple(self.checkpoint_epochs)
            if not all(isinstance(e, int) and 0 <= e <= self.epochs for e in eps):
                raise ValueError(f"{zoo}: field 'checkpoint_epochs' must hold integers in [0, epochs={self.epochs}], got {eps}")
            self.checkpoint_epochs = eps

    def checkpoints(self) -> tuple[int, ...]:
        """Sorted checkpoint epochs. The final epoch is always one (it is what the predictors read),
        and so is 0: a network that diverges in epoch 1 still has a record to store."""
        base = self.checkpoint_epochs if self.checkpoint_epochs is not None else \
            tuple(e for e in PROTOCOL_CHECKPOINTS if e <= self.epochs)
        return tuple(sorted(set(base) | {0, self.epochs}))

    def protocol(self) -> dict:
        """The settings besides seed and model id that decide what a network becomes. The store records
        them with every part and refuses to grow a zoo under other ones: a zoo resumed with, say,
        3 epochs into a store of 10-epoch networks would silently become two zoos in one. Device,
        strategy, group size, amp and workers are left out: they change how fast, not what."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "checkpoints": list(self.checkpoints()),
                "max_images": self.max_images, "max_test_images": self.max_test_images,
                "eval_train_images": self.eval_train_images}

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def resolved_group_size(self) -> int:
        return self.group_size or DEFAULT_GROUP_SIZE.get(self.torch_device().type, 8)


def epochs_for_images(images_seen: int, n_train: int) -> int:
    """Epochs that show a network about `images_seen` training images, counted on the (capped) training
    set before the network's train fraction: 1 for all of MNIST at 60,000, 42 for digits' 1,438.

    Why a budget in images rather than in epochs: across datasets of different sizes it keeps the number
    of SGD steps, and so how far the networks train, about the same. On MNIST, one pass over all 60,000
    images gave SNE, StatNN and GBM +0.02 to +0.04 tau over ten passes over 4,000 at about the same
    number of steps: the networks no longer overfit a small slice (docs/RESULTS.md, session 24)."""
    for name, v in (("images_seen", images_seen), ("n_train", n_train)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"epochs_for_images: {name} must be a positive integer, got {v!r}")
    return max(1, round(images_seen / n_train))


# ---------------------------------------------------------------- data and units

def prepare_data(config: ZooConfig, data, device: torch.device) -> TrainData:
    """Cap the dataset per config and move it to the device once (no DataLoader: batches are index gathers)."""
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(data, name):
            raise TypeError(f"zoo {config.dataset}/{config.arch}: data lacks field {name!r} "
                            "(expected sne_core.data.ImageData with x_train/y_train/x_test/y_test tensors)")
    tx, ty = data.x_train[:config.max_images], data.y_train[:config.max_images]
    vx, vy = data.x_test[:config.max_test_images], data.y_test[:config.max_test_images]
    return TrainData(*(t.to(device) for t in (tx.float(), ty.long(), vx.float(), vy.long())))


def plan_units(hps: list[HParams], group_size: int) -> list[list[HParams]]:
    """Fixed units over the whole zoo: model ids in order, cut into group_size pieces."""
    ordered = sorted(hps, key=lambda h: h.model_id)
    return [ordered[i:i + group_size] for i in range(0, len(ordered), group_size)]


def strategy_cache_path() -> Path:
    return Path(os.environ.get("SNE_CACHE_DIR", Path.home() / ".cache" / "sne")) / "zoo_strategy.json"


def choose_strategy(config: ZooConfig, arch: Arch, data: TrainData, unit: list[HParams], run: RunSpec) -> str:
    """The faster strategy for this (device, arch, group size, batch, amp), measured once and cached
    on disk (strategy_cache_path(); delete it to re-measure). The measurement: one warm-up step,
    then CALIBRATION_STEPS timed steps of the loop on one network and of one vectorised step on the
    whole unit, compared per network-step."""
    if config.strategy != "auto":
        return config.strategy
    if len(unit) == 1:
        return "loop"
    device = data.train_x.device
    # the CPU's model is in the key: machines of one kind change from session to session, and a
    # calibration made on another CPU would otherwise be reused
    machine = describe_device(device) + ("" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
    key = "|".join(map(str, (machine, torch.__version__, arch.spec.to_json(), len(unit),
                             config.batch_size, config.amp)))
    path = strategy_cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        per_net_step = {}
        for name, fn, nets in (("loop", lambda k: train_network(arch, unit[0], data, run, max_steps=k), 1),
                               ("vectorized", lambda k: train_group(arch, unit, data, run, max_steps=k), len(unit))):
            fn(1)
            _sync(device)
            t0 = time.perf_counter()
            fn(CALIBRATION_STEPS)
            _sync(device)
            per_net_step[name] = (time.perf_counter() - t0) / (CALIBRATION_STEPS * nets)
        cache[key] = {"strategy": min(per_net_step, key=per_net_step.get), "s_per_network_step": per_net_step}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
        print(f"zoo: calibrated {device.type}/{arch.name}, {len(unit)} networks per group: "
              + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in per_net_step.items())
              + f" per network-step -> {cache[key]['strategy']} (cached in {path})", flush=True)
    return cache[key]["strategy"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- training a zoo

def _train_unit(arch: Arch, unit: list[HParams], data: TrainData, run: RunSpec, strategy: str) -> list[NetworkResult]:
    if strategy == "vectorized" and len(unit) > 1:
        results = train_group(arch, unit, data, run)
    else:
        results = [train_network(arch, h, data, run) for h in unit]
    return sorted(results, key=lambda r: r.model_id)


_worker_job: tuple | None = None     # (arch, data, run, strategy), set in each worker by _worker_init


def _worker_init(job: tuple) -> None:
    global _worker_job
    torch.set_num_threads(1)
    _worker_job = job


def _worker_unit(unit: list[HParams]) -> bytes:
    # plain pickle: tensors travel by value (no shared-memory file descriptors to run out of)
    arch, data, run, strategy = _worker_job
    return pickle.dumps(_train_unit(arch, unit, data, run, strategy))


def resolved_workers(config: ZooConfig, device: torch.device, n_units: int) -> int:
    """CPU: one single-threaded process per core. These networks' ops are too small to split well
    across threads, so whole units side by side use the cores better. CUDA: one process."""
    if device.type != "cpu":
        return 1
    # Default 1 (in process): a pool interrupted mid-zoo hung in terminate() here (workers that ignore
    # SIGTERM); set `workers` to use one process per core, as bench/zoo_train.py does.
    return max(1, min(config.workers or 1, n_units))


def default_workers(device: str) -> int:
    """Worker processes for a command-line zoo build (`sne zoo`, scripts/paper_tables.py): one per
    core on CPU, 1 on CUDA. Measured side by side on the 2-core CPU, 32 Arch1 MNIST networks of 10
    epochs over 4,000 images: 58-60 networks/min with 2 workers against 45-50 in process
    (docs/RESULTS.md, session 7). The library's own default
    stays in process (see `resolved_workers`): inside a long-lived host such as a Dagster run, a
    pool costs a spawn per build, and one interrupted there once hung."""
    return 1 if resolve_device(device).type == "cuda" else (os.cpu_count() or 1)


def train_zoo(config: ZooConfig, data, skip_ids=frozenset(), on_result: Callable[[list[NetworkResult]], None] | None = None,
              progress: bool = True, deadline: float | None = None) -> list[NetworkResult]:
    """Train the networks of `config` not in `skip_ids`, one unit at a time; `on_result(unit results)`
    after each unit, in unit order (so an interruption loses at most one unit per worker).
    `deadline` (a `time.time()` value): start no unit after it; the zoo is then incomplete and a
    rerun resumes it (a time-limited GPU call uses this to stop cleanly before it is killed).
    Returns the results, by model_id."""
    arch = get_arch(config.arch)
    device = config.torch_device()
    tdata = prepare_data(config, data, device)
    run = RunSpec(config.epochs, config.checkpoints(), config.batch_size, config.eval_train_images, config.amp)
    hps = [sample_network(config.seed, i, arch.spec.bias_init) for i in range(config.n_models)]
    units = [[h for h in u if h.model_id not in skip_ids] for u in plan_units(hps, config.resolved_group_size())]
    units = [u for u in units if u]
    if not units:
        return []
    n_train = len(tdata.train_x)
    workers = resolved_workers(config, device, len(units))
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)        # calibrate as the workers will run
    try:
        strategy = choose_strategy(config, arch, tdata, units[0], run) if config.epochs > 0 else "loop"
    finally:
        torch.set_num_threads(threads)
    bar = None
    if progress:
        from tqdm import tqdm
        total = sum(steps_per_epoch(h, n_train, config.batch_size) * config.epochs for u in units for h in u)
        bar = tqdm(total=total, unit="net-step", desc=f"zoo {config.dataset}/{config.arch} ({strategy}, "
                   f"{workers} worker{'s' * (workers > 1)})", smoothing=0.1)
    out: list[NetworkResult] = []
    pool = None
    if workers > 1:
        # spawn, not fork: the caller may have threads (Dagster's executor, torch's pools), and a
        # forked child can inherit a lock that one of them held -- seen here as a zoo step that hung
        # for good inside a Dagster run. Spawned workers start clean; the data goes to them once.
        pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=((arch, tdata, run, strategy),))
        unit_results = (pickle.loads(b) for b in pool.imap(_worker_unit, units))
    else:
        unit_results = (_train_unit(arch, u, tdata, run, strategy) for u in units)
    n_todo = sum(map(len, units))
    finished = False
    try:
        for unit, results in zip(units, unit_results):
            if on_result is not None:
                on_result(results)
            out += results
            if bar is not None:
                bar.update(sum(steps_per_epoch(h, n_train, config.batch_size) * config.epochs for h in unit))
            if deadline is not None and time.time() >= deadline and len(out) < n_todo:
                break          # out of time: `finished` stays False, so pool workers are stopped
        finished = len(out) == n_todo
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:   # interrupted: stop the workers mid-unit. SIGKILL first, because a worker inherits an
                # ignored SIGTERM from launchers that ignore it (seen here), and then terminate() hangs.
                for proc in pool._pool:
                    proc.kill()
                pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
    return sorted(out, key=lambda r: r.model_id)


@dataclass
class ZooSummary:
    zoo: str
    networks: int
    diverged: int
    trained_now: int
    test_acc_quantiles: dict[str, float] = field(default_factory=dict)   # over non-diverged networks, final checkpoint
    missing: int = 0            # networks of the config not yet in the store (a deadline stopped the build)

    def format(self) -> str:
        q = " ".join(f"{k}={v:.4f}" for k, v in self.test_acc_quantiles.items()) or "n/a (no network finished)"
        todo = f" missing={self.missing} (rerun to resume)" if self.missing else ""
        return (f"zoo {self.zoo}: networks={self.networks} diverged={self.diverged} trained_now={self.trained_now}{todo}\n"
                f"test accuracy quantiles: {q}")


def summarize(zoo: str, results: list[NetworkResult], trained_now: int) -> ZooSummary:
    final = [r.checkpoints[-1].test_acc for r in results if r.status != STATUS_DIVERGED and r.checkpoints]
    return ZooSummary(zoo, len(results), sum(r.status == STATUS_DIVERGED for r in results), trained_now,
                      _quantiles(final))


def _quantiles(acc) -> dict[str, float]:
    """min / q25 / median / q75 / max of the final test accuracies ({} when there are none)."""
    if not len(acc):
        return {}
    return {name: float(np.quantile(acc, q))
            for name, q in (("min", 0.0), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("max", 1.0))}


def build_zoo(config: ZooConfig, data, store, progress: bool = True, deadline: float | None = None) -> ZooSummary:
    """Train what `store` lacks of this zoo, writing one atomic part per unit; summarise the whole zoo.
    With a `deadline` (see train_zoo) the summary may report missing networks: rerun to finish."""
    arch, protocol = get_arch(config.arch), config.protocol()
    store.check_protocol(config.dataset, config.arch, protocol)   # before any training, not after
    done = set(store.completed_ids(config.dataset, config.arch))
    trained = train_zoo(config, data, skip_ids=frozenset(done),
                        on_result=lambda rs: store.write_networks(config.dataset, arch, rs, config.seed, protocol),
                        progress=progress, deadline=deadline)
    return summarize_store(store, config, len(trained))


def summarize_store(store, config: ZooConfig, trained_now: int) -> ZooSummary:
    """Summary of the whole stored zoo (networks trained now and in earlier runs), from final rows."""
    df = store.read_models(config.dataset, config.arch)
    final = df[df["is_final"]]
    ok = final[final["status"] != STATUS_DIVERGED]["test_acc"].to_numpy()
    missing = len(set(range(config.n_models)) - set(final["model_id"].tolist()))
    return ZooSummary(f"{config.dataset}/{config.arch}", len(final), int((final["status"] == STATUS_DIVERGED).sum()),
                      trained_now, _quantiles(ok), missing)
