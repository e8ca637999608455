"""Pieces every baseline shares: the arch-check decorator, a fitted feature standardiser, an MLP.

Kept apart from `sne_core.baselines.__init__` so the baseline modules can import it without a
circular import.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from sne_core.archs import Arch
from sne_core.encoders import UnsupportedArchitecture
from sne_core.weights import WeightSet

__all__ = ["UnsupportedArchitecture", "arch_check", "FeatureNorm", "mlp", "layout_key", "module_device"]


class arch_check:
    """Makes `check_arch(arch)` callable both ways the protocols need it.

    On the class (`StatNNPredictor.check_arch(arch)`): can this kind of predictor read `arch` at all,
    with its default hyperparameters? On an instance (`model.check_arch(arch)`): can this trained
    model read it (e.g. the MLP also needs the layout it was trained on). The wrapped function gets
    `(cls, self_or_None, arch)` and raises `UnsupportedArchitecture` with the reason.
    """

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj, cls=None):
        return functools.partial(self.fn, cls if cls is not None else type(obj), obj)


def layout_key(arch: Arch) -> tuple:
    """What must match for two archs to share a flat parameter vector: kinds, roles and shapes in order."""
    return tuple((p.kind, p.role, p.shape) for p in arch.layout)


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def check_groups(groups: list[WeightSet], check) -> None:
    if not groups:
        raise ValueError("forward needs at least one WeightSet group, got an empty list")
    for ws in groups:
        check(ws.arch)


class FeatureNorm(nn.Module):
    """Per-feature standardisation with statistics fitted on training data only.

    `fit(x)` sets mean/std from the training features (the predictors' `prepare(train_groups)` calls
    it); if nobody called it, the first forward in training mode fits on that batch instead. Features
    that are constant in training (e.g. zero-padded tensor slots of an arch never seen in training)
    get std 1 so they pass through unscaled instead of blowing up. Stats are buffers, so they travel
    with `state_dict()`.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, self.mean.numel()).to(self.mean)
        self.mean.copy_(x.mean(0))
        std = x.std(0, correction=0) if x.shape[0] > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            if not self.training:
                raise RuntimeError("feature normalisation is not fitted: call prepare(train_groups) or train "
                                   "the predictor before evaluating it")
            self.fit(x)
        return (x - self.mean) / self.std


