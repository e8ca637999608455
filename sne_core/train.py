"""One training loop for every torch predictor (SNE and the torch baselines), one path for GBM.

A `TrainConfig` in, a `FitResult` out. The loop: Adam on binary cross-entropy between the
predictor's logits and the networks' test accuracies, plus SNE's logit-invariance penalty
v * 1/2 (f(x) - f(g x))^2 with g a random function-preserving hidden-unit permutation
(SPEC §4.6), and optionally a pairwise ranking loss (`rank_weight`); after every epoch the
validation set is scored and the state with the best validation Kendall tau is kept (early
stopping on validation only: `fit` never sees test data).
What is scored and kept is the raw weights, or with `ema_epochs` (SNE's default) their moving average.
Ensembles (`TrainConfig.members`, and composite methods such as `sne_statnn`) are several such fits,
one after another, whose mean logit is the prediction (sne_core.ensemble).
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from sne_core.aux_targets import (AuxHead, TensorStatsHead, check_targets, neuron_statistic_targets,
                                  statistic_targets)
from sne_core.devices import resolve_device
from sne_core.ensemble import NOT_A_MEMBER, Ensemble
from sne_core.methods import get_method
from sne_core.metrics import summarize
from sne_core.symmetry import invariance_penalty
from sne_core.weights import WeightSet


def _finite_nonnegative(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x >= 0


@dataclass
class TrainConfig:
    method: str = "sne"
    # Optimisation (*choose*; the paper does not give them). Zoos are a few thousand networks, so
    # 64 networks a batch gives ~50 steps an epoch on a 7.5k-network train split; Adam at 1e-3 is
    # the usual Set-Transformer setting. Early stopping usually ends runs well before `epochs`.
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    # Adam's L2. 0: at 1e-3 SNE's test tau stayed level and its validation tau fell by 0.044 (Fashion-MNIST/Arch1,
    # 800 training networks; docs/RESULTS.md, session 27), though SNE overfits its training networks.
    weight_decay: float = 0.0
    patience: int = 10             # epochs without a better validation tau before stopping
    # v of the logit-invariance regulariser; None = the method's default (1.0 for SNE, 0 otherwise:
    # see sne_core.methods.Method.invariance_weight). v = 1 puts the penalty on the same scale as the
    # BCE term: a permuted copy whose logit differs by 1 costs as much as a ~0.5 BCE error, so it
    # shapes the encoder without letting it collapse to a constant (which minimises the penalty alone).
    invariance_weight: float | None = None
    seed: int = 0                  # predictor seed: init, batch order, dropout, sampled permutations
    device: str = "auto"           # "auto" = cuda if available, else cpu
    amp: str = "auto"              # "none" | "bf16" | "auto" (= bf16 autocast on CUDA with bf16 support)
    hyper: dict = field(default_factory=dict)   # predictor hyperparameters, over the method's defaults
    # Which checkpoints of the training networks to learn from: "final" (SPEC's default protocol)
    # or "all" (every stored epoch: more examples from the same networks, so small zoos train
    # better; split by network, so nothing leaks). Validation and test are final checkpoints always.
    train_checkpoints: str = "final"
    # Learning-rate schedule: "constant" (Adam at `lr` throughout) or "cosine" (annealed per step
    # from `lr` to 0 over `epochs`; early stopping may end the run before the end of the anneal).
    lr_schedule: str = "constant"
    # > 0: validate, select and return an exponential moving average of the parameters over about
    # this many epochs (decay per step 1 - 1 / (ema_epochs * steps per epoch)) instead of the raw
    # weights; 0 = the raw weights; None = the method's default (4 for SNE, 0 for the baselines: see
    # sne_core.methods.Method.ema_epochs for the measurements). In epochs rather than steps, so one
    # value suits zoos of 80 and of 800 training networks. Why: validation tau jumps from epoch to
    # epoch, and the average makes selecting on it less of a lottery.
    ema_epochs: float | None = None
    # > 1: a deep ensemble. Train this many predictors, member i with seed `seed + MEMBER_SEED_STRIDE * i`
    # and every other setting the same (each selects its own epoch on validation), and predict their
    # mean logit. 1 = one predictor (the default). Costs `members` fits. Measured on SNE, which
    # overfits (train tau ~0.87 against ~0.78 test with 800 networks): 3 members gained only +0.006
    # test tau, since seeds make nearly the same mistakes (docs/RESULTS.md, session 8). GBM trains one
    # model whatever this says: its fit does not depend on the seed, so its members would all be the same.
    members: int = 1
    # > 0: add this times a pairwise ranking loss (RankNet's logistic loss over the batch's ordered
    # pairs, `pairwise_rank_loss`) to the BCE. 0 = BCE only (the default). Why try it: Kendall tau,
    # the metric models are selected and judged on, counts ordered pairs, and BCE weighs a network's
    # error the same whether or not it swaps the network's rank with its neighbours'. Why it is off:
    # at 1 it moved test tau by +0.006 (SNE, StatNN) and +0.003 (StatNN, 1,600 networks) on MNIST/Arch2,
    # within seed noise, with validation tau down at 800 networks and R² down by ~0.03 (docs/RESULTS.md, session 12).
    # On Fashion-MNIST/Arch1 (every image once, 400 networks) it lifted SNE on 4 seeds of 4: at 0.3 by +0.037 test
    # and +0.053 validation tau, R² 0.92 -> 0.90; at 1 by +0.031, R² -> 0.78; at 0.3 on MNIST/Arch1 (160 networks)
    # by +0.008 (docs/RESULTS.md, session 30). It does not carry to Arch2: at 0.3, Fashion-MNIST/Arch2 (400
    # networks) +0.040, -0.015, -0.021 (mean +0.001, validation -0.004), MNIST/Arch2 (160) -0.007 and digits/Arch2
    # (160) +0.009, 3 seeds each (docs/RESULTS.md, session 31). So it stays off for every method. BCE against each
    # network's quantile among the training networks, another way to weight order, did the same: +0.037 on
    # Fashion-MNIST/Arch1, -0.002 on Fashion-MNIST/Arch2 (session 32; not kept). Beside SNE's statistics branch the
    # gains add up on Fashion-MNIST/Arch1 (800 networks: +0.086, +0.073, +0.092 over the default, the branch alone +0.044 and
    # +0.042, this loss alone +0.030 and +0.046), and on MNIST/Arch2 (160) it adds nothing to the branch (-0.002, 3 seeds; docs/RESULTS.md, session 37).
    rank_weight: float = 0.0
    # Auxiliary targets (sne_core.aux_targets): a second head on the encoder's code predicts more about
    # each training network, and is dropped after training. > 0 adds this times its loss: `aux_weight`
    # for the zoo's records of the network (hyperparameters, train/test metrics), `stats_weight` for
    # StatNN's statistics of its own tensors. Only for predictors with a learned code
    # (`forward(groups, return_codes=True)`: SNE). None = the method's default (sne_core.methods.Method).
    aux_weight: float | None = None
    stats_weight: float | None = None
    # > 0: also this times the per-tensor statistics loss (aux_targets.TensorStatsHead): every tensor
    # vector of SNE's layer encoder predicts its own tensor's statistics, where `stats_weight` asks the
    # network code for all of them at once. None = the method's default (off; see sne_core.methods).
    tensor_stats_weight: float | None = None
    # With stats_weight > 0, also per-layer statistics read neuron by neuron as targets of the same loss
    # (aux_targets.neuron_statistic_targets: weight norms, bias shares, kernel sums). None = the method's
    # default (sne_core.methods: off for every method).
    neuron_stats: bool | None = None
    # A composite method's parts (sne_core.methods.Method.parts) train with this config's settings, except what is
    # named here per part: {part: {TrainConfig field: value}}. E.g. {"sne": {"members": 3, "rank_weight": 0.3}}
    # makes sne_statnn's SNE part the SNE of the `full` profile (session 38's) while its StatNN part keeps one fit
    # and the BCE alone, so the composite is made of the same SNE as the SNE row. A part may not set its method,
    # seed, device or hyperparameters (those are `hyper[part]`). Empty (the default) = every part as the composite;
    # `as_dict` then leaves the field out, so result keys and kept fits made before it existed still match.
    part_train: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"TrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.ema_epochs is not None and not _finite_nonnegative(self.ema_epochs):   # None = the method's
            raise ValueError(f"TrainConfig.ema_epochs must be a finite number >= 0, got {self.ema_epochs!r}")
        if not _finite_nonnegative(self.rank_weight):
            raise ValueError(f"TrainConfig.rank_weight must be a finite number >= 0, got {self.rank_weight!r}")
        for name in ("aux_weight", "stats_weight", "tensor_stats_weight"):   # None = the method's
            if getattr(self, name) is not None and not _finite_nonnegative(getattr(self, name)):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.neuron_stats not in (None, True, False):
            raise ValueError(f"TrainConfig.neuron_stats must be true, false or null (the method's default), "
                             f"got {self.neuron_stats!r}")
        if self.train_checkpoints not in ("final", "all"):
            raise ValueError(f"TrainConfig.train_checkpoints must be 'final' or 'all', got {self.train_checkpoints!r}")
        if self.amp not in ("none", "bf16", "auto"):
            raise ValueError(f"TrainConfig.amp must be 'none', 'bf16' or 'auto', got {self.amp!r}")
        for name in ("epochs", "batch_size", "patience", "members"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.part_train, dict):
            raise ValueError(f"TrainConfig.part_train must map a composite's parts to TrainConfig fields, "
                             f"got {self.part_train!r}")
        allowed = sorted(set(self.__dataclass_fields__) - NOT_PER_PART)
        for part, over in self.part_train.items():
            if not isinstance(over, dict) or set(over) - set(allowed):
                raise ValueError(f"TrainConfig.part_train[{part!r}] must map TrainConfig fields among {allowed} "
                                 f"to values, got {over!r}")
            try:
                replace(self, part_train={}, **over)      # each value checked as this class checks its own
            except ValueError as e:
                raise ValueError(f"TrainConfig.part_train[{part!r}]: {e}") from None

    def as_dict(self) -> dict:
        return config_dict(self)


def config_dict(config) -> dict:
    """A TrainConfig's fields as a dict, an empty `part_train` left out: keys and kept fits made before that field
    existed still match. Also what `sne_core.methods.defaults_fingerprint` hashes of TrainConfig's defaults."""
    d = asdict(config)
    # any dataclass: defaults_fingerprint hashes whichever TrainConfig the module holds (tests swap in one without part_train)
    if not d.get("part_train", True):
        del d["part_train"]
    return d


# What a composite's part takes from the composite and `TrainConfig.part_train` cannot change.
NOT_PER_PART = {"method", "seed", "device", "hyper", "part_train"}


@dataclass
class ZooData:
    """Networks and their targets. `groups[k]` holds networks of one architecture; `y` and
    `model_ids` follow the groups' concatenated order (the order of a predictor's output)."""
    groups: list[WeightSet]
    y: torch.Tensor                 # [N] float32 test accuracy in [0, 1]
    model_ids: np.ndarray           # [N]
    zoo: str = ""
    aux: torch.Tensor | None = None  # [N, len(aux_targets.TARGETS)] the zoo's other records (NaN = undefined)

    def __post_init__(self):
        n = sum(len(g) for g in self.groups)
        y = self.y if isinstance(self.y, torch.Tensor) else np.array(self.y, dtype=np.float32)  # own copy
        self.y = torch.as_tensor(y, dtype=torch.float32).reshape(-1)
        self.model_ids = np.asarray(self.model_ids).reshape(-1)
        if n == 0 or self.y.numel() != n or self.model_ids.size != n:
            raise ValueError(f"zoo {self.zoo!r}: {n} networks but {self.y.numel()} targets and "
                             f"{self.model_ids.size} model ids (expected equal and > 0)")
        if not torch.isfinite(self.y).all() or self.y.min() < 0 or self.y.max() > 1:
            raise ValueError(f"zoo {self.zoo!r}: field 'test_acc' must be finite accuracies in [0, 1], "
                             f"got range [{self.y.min():.4g}, {self.y.max():.4g}]")
        if self.aux is not None:
            self.aux = torch.as_tensor(self.aux, dtype=torch.float32)
            check_targets(self.aux, n, self.zoo)

    def __len__(self) -> int:
        return self.y.numel()

    def to(self, device) -> "ZooData":
        aux = None if self.aux is None else self.aux.to(device)
        return ZooData([g.to(device) for g in self.groups], self.y.to(device), self.model_ids, self.zoo, aux)

    def subset(self, idx, zoo: str | None = None) -> "ZooData":
        """The networks at global indices `idx` (kept in stored order), targets and records with them."""
        idx = torch.sort(torch.as_tensor(idx).cpu()).values
        groups, y = self.batch(idx)
        aux = None if self.aux is None else self.aux[idx.to(self.aux.device)]
        return ZooData(groups, y, self.model_ids[idx.numpy()], zoo or self.zoo, aux)

    def batch(self, idx: torch.Tensor) -> tuple[list[WeightSet], torch.Tensor]:
        """Networks at global indices `idx` (sorted, so outputs come back in group order) and their y."""
        idx = torch.sort(idx.cpu()).values
        groups, start = [], 0
        for g in self.groups:
            local = idx[(idx >= start) & (idx < start + len(g))] - start
            if local.numel():
                groups.append(g.subset(local.to(g.params[0].device)))
            start += len(g)
        return groups, self.y[idx.to(self.y.device)]


@dataclass
class FitResult:
    model: Any                      # the predictor at its best validation epoch
    config: TrainConfig
    best_epoch: int                 # 0-based; GBM: -1 (it selects its rounds itself)
    epochs_run: int
    val: dict[str, float]           # validation metrics of the returned model
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    members: list["FitResult"] = field(default_factory=list)   # an ensemble's members, else empty
    member_names: list[str] = field(default_factory=list)      # theirs: "member<i>", or a composite's part methods


MEMBER_SEED_STRIDE = 1000    # member i of an ensemble trains with seed + 1000 i: apart from other seeds' members


class EMA:
    """Exponential moving average of a model's parameters, avg <- d * avg + (1 - d) * w per step.
    Buffers (BatchNorm statistics) are not averaged: `fit` recomputes them for whatever weights it
    evaluates (`recalibrate_batchnorm`)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.avg = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, p in model.named_parameters():
            self.avg[k].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap_in(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Load the average into `model`; return the raw state to restore afterwards."""
        live = {k: t.detach().clone() for k, t in model.state_dict().items()}
        for k, p in model.named_parameters():
            p.copy_(self.avg[k])
        return live


def _use_bf16(device: torch.device, amp: str) -> bool:
    # bf16 needs no loss scaling; it pays off for SNE's attention on GPU. On CPU autocast is
    # usually slower than fp32, so "auto" keeps fp32 there.
    if amp == "bf16":
        return True
    return amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


@torch.no_grad()
def predict(model, data: ZooData, batch_size: int = 256) -> np.ndarray:
    """Predicted test accuracies, in `data`'s order."""
    if not isinstance(model, torch.nn.Module):          # GBM and other non-torch predictors
        return np.asarray(model.predict(data.groups), dtype=np.float64).reshape(-1)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for idx in torch.arange(len(data)).split(batch_size):
        groups, _ = data.batch(idx)
        logits = model([g.to(device) for g in groups])   # fp32: evaluation is cheap next to training
        out.append(torch.sigmoid(logits.float()).cpu())
    return torch.cat(out).double().numpy()


def pairwise_rank_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of log(1 + exp(-(s_i - s_j))) over the pairs with y_i > y_j (RankNet): logits [B], y [B].
    Zero when no pair is ordered (all targets equal)."""
    ordered = y[:, None] > y[None, :]                       # [B, B]
    if not ordered.any():
        return logits.sum() * 0.0
    return F.softplus(-(logits[:, None] - logits[None, :])[ordered]).mean()


def network_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`order` cut into batches of `batch_size` networks. A last batch of one network joins the one
    before it: BatchNorm (SNE's z) cannot normalise a single network in train mode."""
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@torch.no_grad()
def recalibrate_batchnorm(model, data: ZooData, batch_size: int = 256) -> None:
    """Set every BatchNorm's running statistics to their average over the training networks.

    The running averages drift with the encoder during an epoch; with few steps an epoch (small
    zoos) the ones kept at the end describe no fixed model, and evaluation came out miscalibrated
    (SNE's R² far below 0 while it ranked fine). One pass in train mode with cumulative averaging
    gives the statistics of the model as it is now, from training data only."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                      # cumulative average over this pass
    model.train()
    for idx in network_batches(torch.arange(len(data)), batch_size):
        if len(idx) > 1:                       # batch statistics need two networks (a zoo of one)
            model(data.batch(idx)[0])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


class OutOfTime(RuntimeError):
    """A fit not started because `fit`'s deadline had passed; what finished before it is in `keep_fits`."""


def fit(config: TrainConfig, train: ZooData, val: ZooData, log: Callable[[int, dict], None] | None = None,
        keep_fits: str | Path | None = None, deadline: float | None = None) -> FitResult:
    """`keep_fits`: a folder where each finished torch fit is saved (a single predictor, or each member of an
    ensemble or composite as it finishes) and found again, so a call interrupted after it trains only the rest.
    A fit in progress there also saves its state after every epoch (`<fit>.progress.pt`, gone once the fit is
    saved): a call killed mid-fit goes on at the next epoch and ends with what an uninterrupted fit returns.
    GBM is not kept: it fits in seconds. `deadline` (a `time.time()`): no fit starts after it, and with
    `keep_fits` a fit in progress stops at its first epoch end past it; `OutOfTime` is raised instead."""
    method = get_method(config.method)
    t0 = time.perf_counter()
    if config.part_train and not method.parts:
        raise ValueError(f"TrainConfig.part_train is for composite methods; {config.method!r} has no parts "
                         f"(got keys {sorted(config.part_train)})")
    if method.parts:                    # a composite: each part its own method's defaults, its own settings
        for name, by_part in (("hyper", config.hyper), ("part_train", config.part_train)):
            if set(by_part) - set(method.parts):
                raise ValueError(f"TrainConfig.{name} of composite method {config.method!r} maps its parts "
                                 f"{list(method.parts)} to their settings; got keys {sorted(by_part)}")
        not_torch = [p for p in method.parts if not get_method(p).is_torch]
        if not_torch:                   # refused before any part trains, not after
            raise TypeError(f"composite method {config.method!r}: part(s) {not_torch} are not torch predictors "
                            f"({NOT_A_MEMBER})")
        parts = [replace(config, method=p, hyper=config.hyper.get(p, {}), part_train={},
                         **config.part_train.get(p, {})) for p in method.parts]
        return _fit_ensemble(config, parts, list(method.parts), train, val, log, t0, keep_fits, deadline)
    if config.members > 1 and method.is_torch:
        seeds = [config.seed + MEMBER_SEED_STRIDE * i for i in range(config.members)]
        members = [replace(config, members=1, seed=s) for s in seeds]
        return _fit_ensemble(config, members, [f"member{i}" for i in range(config.members)], train, val, log, t0,
                             keep_fits, deadline)
    if method.is_torch:
        kept = None if keep_fits is None else Path(keep_fits) / f"fit-{config.method}-seed{config.seed}.pt"
        return _fit_or_load(kept, config, train, val, log, deadline)
    _not_after(deadline, config)
    torch.manual_seed(config.seed)
    return _fit_gbm(method, config, train, val, log, t0)


def _not_after(deadline: float | None, config: TrainConfig) -> None:
    if deadline is not None and time.time() >= deadline:
        raise OutOfTime(f"{config.method} seed {config.seed}: not started, its deadline has passed")


def _fit_torch(config: TrainConfig, train: ZooData, val: ZooData, log, t0: float,
               progress: Path | None = None, deadline: float | None = None) -> FitResult:
    """One torch predictor, epoch by epoch. With `progress`, the loop's whole state is saved there after every
    epoch and a saved state is resumed from; `deadline` then stops it at an epoch end (`OutOfTime`)."""
    method = get_method(config.method)
    torch.manual_seed(config.seed)
    archs = [g.arch for g in train.groups]
    device = resolve_device(config.device)
    model = method.build(archs, config.hyper).to(device)
    bf16 = _use_bf16(device, config.amp)
    v = method.invariance_weight if config.invariance_weight is None else config.invariance_weight
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)     # batch order and sampled permutations
    train_dev, val_dev = train.to(device), val.to(device)
    if hasattr(model, "prepare"):       # e.g. input standardisation fitted on training networks only
        model.prepare(train_dev.groups)
    w_rec = method.aux_weight if config.aux_weight is None else config.aux_weight
    w_stat = method.stats_weight if config.stats_weight is None else config.stats_weight
    w_tstat = method.tensor_stats_weight if config.tensor_stats_weight is None else config.tensor_stats_weight
    neurons = method.neuron_stats if config.neuron_stats is None else config.neuron_stats
    aux_head, tensor_head, code_stats, tensor_stats = _aux_heads(model, method.name, train_dev, w_rec, w_stat, w_tstat,
                                                                 neurons, device)
    for head in (aux_head, tensor_head):   # trained with the predictor, never part of what fit returns
        if head is not None:
            opt.add_param_group({"params": list(head.parameters())})

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
             if config.lr_schedule == "cosine" else None)
    ema_epochs = method.ema_epochs if config.ema_epochs is None else config.ema_epochs
    ema = EMA(model, 1.0 - 1.0 / max(1.0, ema_epochs * steps_per_epoch)) if ema_epochs > 0 else None

    history, best_tau, best_epoch, best_state, best_val, stale = [], -math.inf, -1, None, {}, 0
    heads, first_epoch = (aux_head, tensor_head), 0
    if progress is not None and progress.is_file():      # a fit an earlier call began: go on where it stopped
        state = _load_progress(progress, config)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        for head, saved in zip(heads, state["heads"]):
            if head is not None:
                head.load_state_dict(saved)
        if sched is not None:
            sched.load_state_dict(state["sched"])
        if ema is not None:
            ema.avg = {k: t.to(device) for k, t in state["ema"].items()}
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        history, best_tau, best_epoch, best_state, best_val, stale = state["record"]
        best_state = {k: t.to(device) for k, t in best_state.items()}
        first_epoch, t0 = state["epoch"] + 1, t0 - state["seconds"]     # seconds: the earlier calls' too
    zero = torch.zeros((), device=device)            # the loss terms a config leaves off
    epoch = first_epoch - 1                          # what epochs_run counts if no epoch is left to run
    for epoch in range(first_epoch, config.epochs):
        model.train()
        for head in heads:
            if head is not None:
                head.train()
        sums = torch.zeros(7, device=device)   # loss, bce, rank, penalty, aux, stats, tensor_stats summed over networks
        for idx in network_batches(torch.randperm(len(train), generator=gen), config.batch_size):
            # sorted: the order batch() returns its networks in; left on the CPU: no device -> host copy per step
            idx = torch.sort(idx).values
            groups, y = train_dev.batch(idx)               # y: [B]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                aux = stat = tstat = zero
                if aux_head is None and tensor_head is None:
                    logits = model(groups).float()                                   # [B]
                else:
                    logits, z, T = model(groups, return_codes=True)                  # [B], [B, d], [n_tensors, d]
                    if aux_head is not None:
                        aux, stat = aux_head.loss(z, train_dev.aux[idx] if w_rec > 0 else None,
                                                  None if code_stats is None else code_stats[idx])
                    if tensor_head is not None:
                        tstat = tensor_head.loss(T, tensor_stats[idx], groups)
                    logits = logits.float()
                bce = F.binary_cross_entropy_with_logits(logits, y)
                rank = pairwise_rank_loss(logits, y) if config.rank_weight > 0 else zero
                penalty = invariance_penalty(model, groups, logits, gen) if v > 0 else zero
            loss = bce + config.rank_weight * rank + v * penalty + w_rec * aux + w_stat * stat + w_tstat * tstat
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if ema is not None:
                ema.update(model)
            sums += torch.stack([loss, bce, rank, penalty, aux, stat, tstat]).detach() * len(y)   # no host sync per step
        live = ema.swap_in(model) if ema is not None else None      # validate the average
        recalibrate_batchnorm(model, train_dev)
        val_m = summarize(predict(model, val_dev, config.batch_size), val.y.numpy())
        train_m = (dict(zip(("loss", "bce", "rank", "penalty", "aux", "stats", "tensor_stats"), (sums / len(train)).tolist()))
                   | {"lr": opt.param_groups[0]["lr"]})
        metrics = {f"train_{k}": x for k, x in train_m.items()} | {f"val_{k}": x for k, x in val_m.items()}
        history.append({"epoch": epoch, **metrics})
        if log is not None:
            log(epoch, metrics)
        # Model selection on validation Kendall tau only. A constant prediction has tau = NaN:
        # never "better", but the first epoch is kept so a model is always returned.
        tau = val_m["tau"] if math.isfinite(val_m["tau"]) else -math.inf
        if best_state is None or tau > best_tau:
            best_tau, best_epoch, best_val, stale = tau, epoch, val_m, 0
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            stale += 1
        if live is not None:
            model.load_state_dict(live)         # back to the raw weights to go on training
        if stale >= config.patience:
            break
        if progress is not None:        # everything the next epoch depends on, so a resumed fit is exact
            _save_atomically(progress, {
                "config": config.as_dict(), "epoch": epoch, "seconds": time.perf_counter() - t0,
                "model": model.state_dict(), "opt": opt.state_dict(),
                "heads": [None if h is None else h.state_dict() for h in heads],
                "sched": None if sched is None else sched.state_dict(), "ema": None if ema is None else ema.avg,
                "gen": gen.get_state(), "rng": torch.get_rng_state(),
                "record": (history, best_tau, best_epoch, best_state, best_val, stale)})
            if deadline is not None and time.time() >= deadline and epoch + 1 < config.epochs:
                raise OutOfTime(f"{config.method} seed {config.seed}: stopped after epoch {epoch}, its deadline has "
                                f"passed; the next call goes on from {progress}")
    model.load_state_dict(best_state)
    return FitResult(model, config, best_epoch, epoch + 1, best_val, history, time.perf_counter() - t0)


def _aux_heads(model, method: str, train: ZooData, w_rec: float, w_stat: float, w_tstat: float, neurons: bool,
               device):
    """(auxiliary head for `model`'s code, per-tensor statistics head, the training networks' statistics
    targets for each), each present when its weight is > 0, else None (sne_core.aux_targets). The code's
    targets are `statistic_targets`' columns, then with `neurons` `neuron_statistic_targets`'; the
    per-tensor head's are the former only."""
    if w_rec == 0 and w_stat == 0 and w_tstat == 0:
        return None, None, None, None
    code_dim = getattr(model, "code_dim", None)
    if code_dim is None:
        raise ValueError(f"method {method!r}: auxiliary targets (aux_weight={w_rec}, stats_weight={w_stat}, "
                         f"tensor_stats_weight={w_tstat}) need a predictor with a learned code (a `code_dim` "
                         "attribute and forward(groups, return_codes=True)); "
                         "set the weights to 0 for it")
    if w_rec > 0:
        check_targets(train.aux, len(train), train.zoo)
    stats = statistic_targets(train.groups).to(device) if w_stat > 0 or w_tstat > 0 else None   # [N, T * 7]
    code_stats = tensor_stats = head = tensor_head = None
    if w_stat > 0:
        code_stats = torch.cat([stats, neuron_statistic_targets(train.groups).to(device)], dim=1) if neurons else stats
    if w_rec > 0 or w_stat > 0:
        head = AuxHead(code_dim, 0 if code_stats is None else code_stats.shape[1]).to(device)
        head.fit_scale(train.aux.cpu() if w_rec > 0 else None, None if code_stats is None else code_stats.cpu())
    if w_tstat > 0:
        tensor_stats = stats
        tensor_head = TensorStatsHead(code_dim, stats.shape[1]).to(device)
        tensor_head.fit_scale(stats.cpu())
    return head, tensor_head, code_stats, tensor_stats


def _fit_ensemble(config: TrainConfig, configs: list[TrainConfig], names: list[str], train: ZooData,
                  val: ZooData, log, t0, keep: str | Path | None = None, deadline: float | None = None) -> FitResult:
    """Fit one predictor per config, one after another, into an `Ensemble`. Each one's per-epoch
    metrics go to `log` and `history` under the prefix `<name>_`; the validation metrics returned
    are the ensemble's own. With `keep`, each member is saved there as it finishes (its progress after every
    epoch) and a saved one is loaded instead of refitted: an SNE member at 800 networks is ~20-35 min on one
    CPU core."""
    results, earlier_s = [], 0.0
    for name, c in zip(names, configs):
        saved = None if keep is None else Path(keep) / f"{name}-{c.method}-seed{c.seed}.pt"
        member_log = None if log is None else (lambda e, m, name=name: log(e, {f"{name}_{k}": x for k, x in m.items()}))
        t = time.perf_counter()
        if c.members > 1:           # a composite's part that is a deep ensemble of its own, kept in its own folder
            results.append(fit(c, train, val, member_log, None if keep is None else Path(keep) / name, deadline))
        else:
            results.append(_fit_or_load(saved, c, train, val, member_log, deadline))
        earlier_s += results[-1].seconds - (time.perf_counter() - t)    # its training time spent by earlier calls
    model = Ensemble([r.model for r in results])
    val_m = summarize(predict(model, val, config.batch_size), val.y.numpy())     # predict moves each batch
    epochs_run = max(r.epochs_run for r in results)
    history = [{"epoch": e} for e in range(epochs_run)]
    for name, r in zip(names, results):
        for h in r.history:
            history[h["epoch"]].update({f"{name}_{k}": x for k, x in h.items() if k != "epoch"})
    return FitResult(model, config, max(r.best_epoch for r in results), epochs_run, val_m, history,
                     time.perf_counter() - t0 + earlier_s, members=results, member_names=names)


def _fit_or_load(kept: Path | None, config: TrainConfig, train: ZooData, val: ZooData, log,
                 deadline: float | None) -> FitResult:
    """The fit kept at `kept` if there is one, else a new fit, saved there unless `kept` is None. `config` is
    a torch predictor's (a single fit or one member); its progress is saved beside `kept` as it trains."""
    if kept is not None and kept.is_file():
        return load_fit(kept, config)
    _not_after(deadline, config)        # a begun fit too: past the deadline, not even one more epoch
    progress = None if kept is None else kept.with_suffix(".progress.pt")
    result = _fit_torch(config, train, val, log, time.perf_counter(), progress, deadline)
    if kept is not None:
        save_fit(kept, result)
        progress.unlink(missing_ok=True)
    return result


def save_fit(path: Path, result: FitResult) -> None:
    """One finished fit (its model and record), written atomically."""
    _save_atomically(path, result)


def _save_atomically(path: Path, obj) -> None:
    from pyarrow.fs import LocalFileSystem
    from sne_core.store_io import atomic_write_bytes
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(LocalFileSystem(), str(Path(path).resolve()), buf.getbuffer())


def _load_progress(path: Path, config: TrainConfig) -> dict:
    """A fit's state at an epoch end, saved by `_fit_torch`; refused, naming the file, if unreadable or saved under another config."""
    return _load_own(path, config, "fit in progress", lambda s: isinstance(s, dict) and s.get("config"),
                     "train that fit from its start")


def load_fit(path: Path, config: TrainConfig) -> FitResult:
    """A fit saved by `save_fit`; refused, naming the file, if unreadable or trained under another config.
    Its `seconds` are the time its training took then."""
    result = _load_own(path, config, "kept fit", lambda r: isinstance(r, FitResult) and r.config.as_dict(),
                       "train that fit again")
    result.model.to(resolve_device(config.device))
    return result


def _load_own(path: Path, config: TrainConfig, what: str, saved_config, remedy: str):
    """One of our own pickled files; refused, naming it, if unreadable or if `saved_config(obj)` is not `config`."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable {what} ({type(e).__name__}: {e}); delete it to {remedy}") from None
    if saved_config(obj) != config.as_dict():
        raise ValueError(f"{path}: field 'config' is not this fit's TrainConfig ({config.as_dict()}); "
                         f"delete it to {remedy}")
    return obj


def _fit_gbm(method, config, train: ZooData, val: ZooData, log, t0) -> FitResult:
    """GBM trains on weight statistics with its own boosting loop and picks its number of rounds
    on the validation set passed here (lowest val MSE, see sne_core.baselines.gbm; never test)."""
    model = method.build([g.arch for g in train.groups], config.hyper)
    model.fit(train.groups, train.y.numpy(), val.groups, val.y.numpy(), seed=config.seed)
    val_m = summarize(predict(model, val), val.y.numpy())
    metrics = {f"val_{k}": x for k, x in val_m.items()}
    if log is not None:
        log(0, metrics)
    return FitResult(model, config, -1, 1, val_m, [{"epoch": 0, **metrics}], time.perf_counter() - t0)
