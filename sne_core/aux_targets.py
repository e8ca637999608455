"""Auxiliary targets: more to predict from a training network's code than its test accuracy.

Only the weights reach a predictor at test time, but during training a second head on the encoder's
code z can be asked to predict more about each training network (multi-task), and is dropped
afterwards. Why: from 800 networks SNE did not learn to read the marks that dropout, the learning rate
or the amount of training data leave on the weights, nor the per-tensor statistics StatNN and GBM rank
these zoos with; it could not reproduce GBM's ranking even when trained on it (docs/RESULTS.md,
sessions 11-12). More labels per network tell the encoder what to look for. Two kinds, each its own
loss weight (TrainConfig.aux_weight, TrainConfig.stats_weight):

- records: what the zoo's `models` table holds about the network. Regression (standardised on the
  training networks, MSE): log lr, log L2, dropout, log train fraction, log init std (std-based inits
  only), train accuracy, log train loss, log test loss. Classes (cross-entropy): optimizer, weight
  init, activation. Labels, so training networks only, like the test accuracy itself.
- statistics: StatNN's 7 numbers (mean, variance, 0/25/50/75/100 % quantiles) of each of the
  network's own tensors, zero-padded slots left out. Self-supervised: computed from the weights.
  With TrainConfig.neuron_stats (off by default), also three statistics per layer that are read neuron
  by neuron (`neuron_statistic_targets`): the spread of its neurons' weight norms, of their bias
  shares, and of its kernels' sums.

The same statistics can also be asked of each tensor's own vector inside SNE (TensorStatsHead,
TrainConfig.tensor_stats_weight, off by default) instead of, or beside, the network code.

Targets are [N, k] float tensors, NaN where a value is not defined for a network.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sne_core.baselines.statnn import N_STATS, QUANTILES, tensor_statistics
from sne_core.hparams import ACTIVATIONS, INITS, OPTIMIZERS
from sne_core.weights import WeightSet

STD_INITS = ("normal", "truncated_normal")   # the inits whose init_std is used (sne_core.hparams)
# Statistics span decades across a zoo (variances ~1e-6 to 1): compared as sign(x) log1p(|x| / floor),
# then standardised. 1e-3 sits under the typical weight (~0.01-0.3), so small ones still spread out.
STAT_FLOOR = 1e-3


def _log(x) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(x, dtype=np.float64))


# name -> how a `models` frame gives it: regression targets a float column, classes an index
REGRESSION = {
    "log_lr": lambda m: _log(m["lr"]),
    "log_l2": lambda m: _log(m["l2"]),
    "dropout": lambda m: m["dropout"].to_numpy(np.float64),
    "log_train_fraction": lambda m: _log(m["train_fraction"]),
    "log_init_std": lambda m: np.where(m["init"].isin(STD_INITS), _log(m["init_std"]), np.nan),
    "train_acc": lambda m: m["train_acc"].to_numpy(np.float64),
    "log_train_loss": lambda m: _log(m["train_loss"]),
    "log_test_loss": lambda m: _log(m["test_loss"]),
}
CLASSES = {"optimizer": OPTIMIZERS, "init": INITS, "activation": ACTIVATIONS}
TARGETS = (*REGRESSION, *CLASSES)          # the record targets' columns, in order


def aux_targets(models) -> torch.Tensor:
    """A `models` frame (rows in the ZooData's order) -> record targets [N, len(TARGETS)], NaN where undefined."""
    missing = sorted({"lr", "l2", "dropout", "train_fraction", "init", "init_std", "train_acc", "train_loss",
                      "test_loss", *CLASSES} - set(models.columns))
    if missing:
        raise ValueError(f"auxiliary targets: the models frame lacks column(s) {missing}")
    cols = [fn(models) for fn in REGRESSION.values()]
    for name, classes in CLASSES.items():
        index = {c: i for i, c in enumerate(classes)}
        cols.append(np.array([index.get(v, np.nan) for v in models[name]], dtype=np.float64))
    out = np.stack(cols, axis=1)
    out[~np.isfinite(out)] = np.nan            # log of 0 or a NaN loss: undefined, not a target
    return torch.from_numpy(out.astype(np.float32))


def statistic_targets(groups: list[WeightSet]) -> torch.Tensor:
    """Weight statistics targets [N, T * N_STATS] over the groups in order, T = the most tensors any
    group's architecture has (so any depth works, unlike StatNN's fixed input): StatNN's per-tensor
    statistics, compressed (STAT_FLOOR); NaN in the slots past an architecture's last tensor."""
    t = max(len(ws.arch.layout) for ws in groups)
    out = []
    for ws in groups:
        s = tensor_statistics(ws, t).view(len(ws), t, N_STATS).float()
        s = torch.sign(s) * torch.log1p(s.abs() / STAT_FLOOR)
        s[:, len(ws.arch.layout):] = float("nan")
        out.append(s.reshape(len(ws), t * N_STATS))
    return torch.cat(out)


N_NEURON_STATS = 3 * len(QUANTILES)   # per layer: quantiles of row norms, bias shares, kernel sums


def neuron_statistic_targets(groups: list[WeightSet]) -> torch.Tensor:
    """Per-layer statistics read neuron by neuron, [N, L * N_NEURON_STATS] over the groups in order, L =
    the most layers any group's architecture has; the 0/25/50/75/100 % quantiles of, per layer:
      - each output neuron's weight norm ||w_o|| (its incoming weights, kernels included),
      - its bias share b_o / sqrt(||w_o||² + b_o²), in [-1, 1]: how far the bias outweighs the inputs
        (a dead or always-on unit sits near -1 or 1),
      - each k x k kernel's sum, the kernel's response to a constant input (conv layers only).
    Compressed as `statistic_targets` (STAT_FLOOR). NaN where a statistic is undefined: no bias, a
    linear layer's kernel sums, slots past an architecture's last layer.
    Why: StatNN's per-tensor quantiles cannot see any of these (each needs a neuron's weights together,
    or its weights with its bias), and neither can SNE's pooling learn them easily from a few hundred
    networks. As GBM inputs beside StatNN's, they lifted test tau on a 1,000-network MNIST/Arch1 zoo
    (400 training networks) from 0.769 to 0.781, validation tau from 0.789 to 0.812 (docs/RESULTS.md,
    session 21)."""
    k, n_layers = len(QUANTILES), max(ws.arch.n_layers for ws in groups)
    out = []
    for ws in groups:                # on the weights' device, like statistic_targets, so the two concatenate
        n, dev = len(ws), ws.params[0].device
        q = torch.tensor(QUANTILES, device=dev)
        s = torch.full((n, n_layers, N_NEURON_STATS), float("nan"), device=dev)
        params = {(info.depth, info.role): p.detach().float() for p, info in zip(ws.params, ws.arch.layout)}
        for d in range(ws.arch.n_layers):
            w, b = params[(d, "weight")], params.get((d, "bias"))
            norms = w.reshape(n, w.shape[1], -1).norm(dim=2)                           # [N, out]
            s[:, d, 0:k] = torch.quantile(norms, q, dim=1).T
            if b is not None:
                share = b / (norms.pow(2) + b.pow(2)).sqrt().clamp(min=1e-12)           # [N, out]
                s[:, d, k:2 * k] = torch.quantile(share, q, dim=1).T
            if w.dim() == 5:                                                            # [N, out, in, k, k]
                s[:, d, 2 * k:] = torch.quantile(w.flatten(3).sum(3).reshape(n, -1), q, dim=1).T
        s = torch.sign(s) * torch.log1p(s.abs() / STAT_FLOOR)
        out.append(s.reshape(n, n_layers * N_NEURON_STATS))
    return torch.cat(out)


def check_targets(targets: torch.Tensor | None, n: int, zoo: str) -> None:
    if targets is None:
        raise ValueError(f"zoo {zoo!r}: auxiliary record targets were asked for (TrainConfig.aux_weight > 0) but "
                         "the ZooData has none (load it with sne_core.protocols.load_zoo, which reads them from "
                         "the store's models table)")
    if targets.shape != (n, len(TARGETS)):
        raise ValueError(f"zoo {zoo!r}: auxiliary targets have shape {tuple(targets.shape)}, expected "
                         f"({n}, {len(TARGETS)}) for targets {list(TARGETS)}")


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std over the defined (finite) values; std 1 where a column is constant."""
    x = x.double()
    ok = torch.isfinite(x)
    n = ok.sum(0).clamp(min=1)
    mean = torch.where(ok, x, 0).sum(0) / n
    var = torch.where(ok, (x - mean) ** 2, 0).sum(0) / n
    return mean.float(), torch.where(var > 0, var.sqrt(), torch.ones_like(var)).float()


def _masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Mean squared error over the defined target values, None when there are none."""
    ok = torch.isfinite(target)
    return F.mse_loss(pred[ok], target[ok]) if ok.any() else None


class AuxHead(nn.Module):
    """code z [B, d] -> BatchNorm -> MLP -> the record targets' outputs (one per regression target, one
    logit per class) and one output per statistics target. `fit_scale` standardises the regression
    targets on the training networks, so each weighs alike; `loss` gives one loss per kind."""

    def __init__(self, dim: int, n_stats: int, hidden: int = 64):      # n_stats: statistic_targets' width
        super().__init__()
        self.n_reg, self.n_classes = len(REGRESSION), [len(c) for c in CLASSES.values()]
        self.n_records = self.n_reg + sum(self.n_classes)
        self.net = nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, self.n_records + n_stats))
        for name, k in (("reg", self.n_reg), ("stat", n_stats)):
            self.register_buffer(f"{name}_mean", torch.zeros(k))
            self.register_buffer(f"{name}_std", torch.ones(k))

    @torch.no_grad()
    def fit_scale(self, records: torch.Tensor | None, stats: torch.Tensor | None) -> None:
        for name, x in (("reg", None if records is None else records[:, :self.n_reg]), ("stat", stats)):
            if x is not None:
                mean, std = _standardise(x)
                getattr(self, f"{name}_mean").copy_(mean)
                getattr(self, f"{name}_std").copy_(std)

    def loss(self, z: torch.Tensor, records: torch.Tensor | None, stats: torch.Tensor | None):
        """z [B, d]; records [B, len(TARGETS)], stats [B, n_stats] or None (not asked for) ->
        (records loss, statistics loss): each the mean over its targets of the loss over defined values."""
        out = self.net(z).float()                                            # [B, n_records + n_stats]
        zero = out.sum() * 0.0
        rec = stat = zero
        if records is not None:
            terms = []
            reg = (records[:, :self.n_reg] - self.reg_mean) / self.reg_std   # [B, n_reg]
            terms += [t for j in range(self.n_reg) if (t := _masked_mse(out[:, j], reg[:, j])) is not None]
            start = self.n_reg
            for j, k in enumerate(self.n_classes):
                y = records[:, self.n_reg + j]
                has = torch.isfinite(y)
                if has.any():
                    terms.append(F.cross_entropy(out[has, start:start + k], y[has].long()))
                start += k
            rec = torch.stack(terms).mean() if terms else zero
        if stats is not None:
            target = (stats - self.stat_mean) / self.stat_std                  # [B, n_stats]
            stat = _masked_mse(out[:, self.n_records:], target)
            stat = zero if stat is None else stat
        return rec, stat


class TensorStatsHead(nn.Module):
    """Per-tensor statistics: each tensor vector the layer encoder pools (SNE.encode(..., tensor_codes=True))
    predicts its own tensor's statistics, through one MLP shared by every tensor.

    Why, beside AuxHead's statistics on the network code z: there one example per network asks z to hold
    every tensor's statistics at once; here every tensor of every network is an example (8 per Arch1
    network), and the statistics are asked for where the set blocks can compute them, right after the
    pooling over the tensor's own chunks. The targets are the same columns as `statistic_targets`,
    standardised per (tensor slot, statistic) on the training networks, so what the head must tell apart
    is how one tensor differs across networks, not how a bias differs from a kernel."""

    def __init__(self, dim: int, n_stats: int, hidden: int = 64):     # n_stats: statistic_targets' width
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, N_STATS))
        self.register_buffer("stat_mean", torch.zeros(n_stats))
        self.register_buffer("stat_std", torch.ones(n_stats))

    @torch.no_grad()
    def fit_scale(self, stats: torch.Tensor) -> None:
        mean, std = _standardise(stats)
        self.stat_mean.copy_(mean)
        self.stat_std.copy_(std)

    def targets(self, stats: torch.Tensor, groups: list[WeightSet]) -> torch.Tensor:
        """stats [B, n_stats], the batch's rows of `statistic_targets` in group order -> standardised
        targets [n_tensors, N_STATS] in SNE's set order (group, then tensor of its layout, then network)."""
        target = ((stats - self.stat_mean) / self.stat_std).view(len(stats), -1, N_STATS)   # [B, T, 7]
        rows, b0 = [], 0
        for ws in groups:
            n, t = len(ws), len(ws.arch.layout)
            rows.append(target[b0:b0 + n, :t].transpose(0, 1).reshape(t * n, N_STATS))    # tensor-major
            b0 += n
        return torch.cat(rows)

    def loss(self, tensor_codes: torch.Tensor, stats: torch.Tensor, groups: list[WeightSet]) -> torch.Tensor:
        """tensor_codes [n_tensors, d] in SNE's set order -> the MSE over every defined target."""
        loss = _masked_mse(self.net(tensor_codes).float(), self.targets(stats, groups))
        return tensor_codes.sum() * 0.0 if loss is None else loss
