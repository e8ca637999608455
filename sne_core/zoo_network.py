"""One network of a zoo: its seeded randomness, initialisation, data subset, and the plain
per-network training loop (the "loop" strategy). `sne_core.zoo_vectorized` trains a group of
networks in one step and draws every random number through the same helpers, in the same order,
so both strategies produce the same network up to floating-point rounding.

Everything random about a network comes from three torch generators seeded from its own
`HParams.seed` (never from the global RNG or from which group it trained in):
    init     (CPU)    : initial weights
    data     (CPU)    : its training subset, then one permutation of that subset per epoch
    dropout  (device) : one uniform draw per dropout layer per step, in forward order
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sne_core.archs import Arch, build_model
from sne_core.hparams import HParams
from sne_core.records import STATUS_DIVERGED, Checkpoint, NetworkResult

EVAL_IMAGES_PER_CHUNK = 1 << 18   # images x networks per evaluation forward (bounds eval memory)


@dataclass
class TrainData:
    """The tensors one zoo trains on, already on the training device."""
    train_x: torch.Tensor   # [N, C, H, W] float32 in [-1, 1]
    train_y: torch.Tensor   # [N] int64
    test_x: torch.Tensor    # [M, C, H, W]
    test_y: torch.Tensor    # [M]


@dataclass(frozen=True)
class RunSpec:
    """What every network of a unit shares: schedule, batch size, evaluation caps, precision."""
    epochs: int
    checkpoint_epochs: tuple[int, ...]
    batch_size: int
    eval_train_images: int | None
    amp: str = "none"


# ---------------------------------------------------------------- seeded randomness

def generators(hp: HParams, device: torch.device) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """(init, data, dropout) generators; distinct streams derived from the one network seed."""
    g_init = torch.Generator().manual_seed(3 * hp.seed)
    g_data = torch.Generator().manual_seed(3 * hp.seed + 1)
    g_drop = torch.Generator(device=device).manual_seed(3 * hp.seed + 2)
    return g_init, g_data, g_drop


def init_state(arch: Arch, hp: HParams, g_init: torch.Generator) -> dict[str, torch.Tensor]:
    """Initial parameters (CPU float32, keys = arch.layout names) per hp.init; biases = hp.bias_init."""
    state = {}
    for p in arch.layout:
        t = torch.empty(p.shape)
        if p.role == "bias":
            t.fill_(hp.bias_init)
        elif hp.init == "he_normal":
            nn.init.kaiming_normal_(t, nonlinearity="relu", generator=g_init)       # std = sqrt(2 / fan_in)
        elif hp.init == "glorot_normal":
            nn.init.xavier_normal_(t, generator=g_init)                              # std = sqrt(2 / (fan_in + fan_out))
        elif hp.init == "orthogonal":
            nn.init.orthogonal_(t, generator=g_init)
        elif hp.init == "normal":
            nn.init.normal_(t, 0.0, hp.init_std, generator=g_init)
        elif hp.init == "truncated_normal":
            nn.init.trunc_normal_(t, 0.0, hp.init_std, -2 * hp.init_std, 2 * hp.init_std, generator=g_init)
        else:
            raise ValueError(f"network {hp.model_id}: field 'init' must be one of he_normal, orthogonal, "
                             f"glorot_normal, normal, truncated_normal; got {hp.init!r}")
        state[p.name] = t
    return state


def subset_size(hp: HParams, n_train: int) -> int:
    return max(1, round(hp.train_fraction * n_train))


def train_subset(hp: HParams, n_train: int, g_data: torch.Generator) -> torch.Tensor:
    """The network's seeded random `train_fraction` of the training set (CPU int64 indices)."""
    return torch.randperm(n_train, generator=g_data)[:subset_size(hp, n_train)]


def epoch_order(subset: torch.Tensor, g_data: torch.Generator) -> torch.Tensor:
    return subset[torch.randperm(len(subset), generator=g_data)]


def dropout_draw(shape: tuple[int, ...], g_drop: torch.Generator, device) -> torch.Tensor:
    """One uniform per activation; drawn even for p = 0 so the stream never depends on p."""
    return torch.rand(shape, generator=g_drop, device=device)


def dropout_multiplier(u: torch.Tensor, p, scale) -> torch.Tensor:
    """Inverted dropout as one multiplier: 1/(1-p) where kept, 0 where dropped (u >= p keeps)."""
    return torch.where(u >= p, scale, 0.0)


class SeededDropout(nn.Module):
    """Inverted dropout whose mask comes from the network's own generator (not the global RNG)."""

    def __init__(self, p: float, g_drop: torch.Generator):
        super().__init__()
        self.p, self.g_drop = p, g_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        u = dropout_draw(tuple(x.shape), self.g_drop, x.device)
        return x * dropout_multiplier(u, self.p, 1.0 / (1.0 - self.p))


# ---------------------------------------------------------------- evaluation

def cross_entropy_per_network(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits [G, b, K], y [G, b] -> summed CE per network [G] (float32 even under autocast)."""
    G, b, K = logits.shape
    return F.cross_entropy(logits.reshape(G * b, K).float(), y.reshape(G * b), reduction="none").view(G, b).sum(1)


def kernel_names(arch: Arch) -> list[str]:
    # L2 applies to kernels only (SPEC §2): conv and linear weights, never biases
    return [p.name for p in arch.layout if p.role == "weight"]


def autocast(device: torch.device, amp: str):
    enabled = amp == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: str = "none") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of one model on (x, y), dropout off."""
    model.eval()
    correct, loss = 0.0, 0.0
    for s in range(0, len(x), 4096):
        with autocast(x.device, amp):
            logits = model(x[s:s + 4096])
        loss += float(cross_entropy_per_network(logits[None], y[None, s:s + 4096])[0])
        correct += float((logits.argmax(1) == y[s:s + 4096]).sum())
    model.train()
    return correct / len(x), loss / len(x)


def diverged_result(result: NetworkResult, epoch: int) -> NetworkResult:
    result.status, result.diverged_epoch = STATUS_DIVERGED, epoch
    return result


# ---------------------------------------------------------------- the per-network loop

def make_optimizer(hp: HParams, params) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr)            # no momentum (Small CNN Zoo protocol)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr)
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=hp.lr)
    raise ValueError(f"network {hp.model_id}: field 'optimizer' must be sgd, adam or rmsprop; got {hp.optimizer!r}")


def build_network(arch: Arch, hp: HParams, device: torch.device):
    """(model on device with its initial weights, data generator) for one network."""
    g_init, g_data, g_drop = generators(hp, device)
    model = build_model(arch, hp.activation, hp.dropout)
    for i, layer in enumerate(arch.spec.layers):
        if layer["type"] == "dropout":
            model[i] = SeededDropout(hp.dropout, g_drop)
    model.load_state_dict(init_state(arch, hp, g_init))
    return model.to(device), g_data


def train_network(arch: Arch, hp: HParams, data: TrainData, run: RunSpec, max_steps: int | None = None) -> NetworkResult:
    """Train one network with nn.Module + torch.optim; `max_steps` stops early (calibration only)."""
    device = data.train_x.device
    model, g_data = build_network(arch, hp, device)
    opt = make_optimizer(hp, model.parameters())
    params = dict(model.named_parameters())
    kernels = [params[n] for n in kernel_names(arch)]
    subset = train_subset(hp, len(data.train_x), g_data)
    eval_idx = subset[:run.eval_train_images].to(device)
    result = NetworkResult(hp)

    def checkpoint(epoch: int) -> None:
        tr = evaluate_model(model, data.train_x[eval_idx], data.train_y[eval_idx], run.amp)
        te = evaluate_model(model, data.test_x, data.test_y, run.amp)
        state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
        result.checkpoints.append(Checkpoint(epoch, tr[0], tr[1], te[0], te[1], state))

    if 0 in run.checkpoint_epochs and max_steps is None:
        checkpoint(0)
    steps = 0
    for epoch in range(1, run.epochs + 1):
        order = epoch_order(subset, g_data).to(device)
        for s in range(0, len(order), run.batch_size):
            idx = order[s:s + run.batch_size]
            with autocast(device, run.amp):
                logits = model(data.train_x[idx])
            loss = F.cross_entropy(logits.float(), data.train_y[idx]) + hp.l2 * sum(w.pow(2).sum() for w in kernels)
            if not torch.isfinite(loss):          # stop before the step that would poison the weights
                return diverged_result(result, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                return result
        if not all(bool(torch.isfinite(p).all()) for p in params.values()):
            return diverged_result(result, epoch)
        if epoch in run.checkpoint_epochs:
            checkpoint(epoch)
    return result


def steps_per_epoch(hp: HParams, n_train: int, batch_size: int) -> int:
    return math.ceil(subset_size(hp, n_train) / batch_size)
