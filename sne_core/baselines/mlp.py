"""MLP on the flattened weight vector (SPEC §5): the simplest baseline, one parameter layout only.

Every input coordinate is one fixed parameter position, so the model ignores all weight-space
symmetry and cannot read any other layout: it refuses them, naming both architectures.
"""
from __future__ import annotations

import torch
from torch import nn

from sne_core.archs import Arch
from sne_core.baselines.common import (FeatureNorm, UnsupportedArchitecture, arch_check, check_groups, layout_key,
                                       module_device)
from sne_core.layers import mlp
from sne_core.weights import WeightSet


class MLPPredictor(nn.Module):
    """flat weights [B, P] -> standardise per coordinate -> MLP -> logit [B]."""

    def __init__(self, train_archs: list[Arch], hidden: int = 256, n_layers: int = 3, dropout: float = 0.1):
        super().__init__()
        if not train_archs:
            raise ValueError("MLPPredictor needs at least one training architecture")
        self.arch = train_archs[0]
        for a in train_archs:
            self.check_arch(a)
        n = self.arch.n_params
        self.norm = FeatureNorm(n)  # per-coordinate: weights of different layers live on very different scales
        self.net = mlp([n] + [hidden] * (n_layers - 1) + [1], dropout)

    @arch_check
    def check_arch(cls, self, arch: Arch) -> None:
        if self is not None and layout_key(arch) != layout_key(self.arch):
            raise UnsupportedArchitecture(
                f"MLP reads one parameter layout only: it was built for {self.arch.name!r} "
                f"({self.arch.n_params} parameters) and cannot read {arch.name!r} ({arch.n_params} parameters, "
                "different layout)")

    def _flat(self, groups: list[WeightSet]) -> torch.Tensor:
        check_groups(groups, self.check_arch)
        dev = module_device(self)
        return torch.cat([ws.flat().to(dev, torch.float32) for ws in groups])  # [B, P]

    @torch.no_grad()
    def prepare(self, train_groups: list[WeightSet]) -> None:
        """Fit the input standardisation on the training networks (call once before training)."""
        self.norm.fit(self._flat(train_groups))

    def forward(self, groups: list[WeightSet]) -> torch.Tensor:
        return self.net(self.norm(self._flat(groups))).squeeze(-1)  # [B]
