"""StatNN (Unterthiner et al. 2020): per-tensor weight statistics -> MLP (SPEC §5).

`tensor_statistics` is shared with the GBM baseline. Each tensor (every weight and every bias, in
layout order) gives 7 numbers: mean, variance and the 0/25/50/75/100% quantiles. Slots past an
architecture's last tensor are zero, so any arch with at most `max_tensors` tensors maps to the
same feature vector and the predictor runs across architectures.
"""
from __future__ import annotations

import torch
from torch import nn

from sne_core.archs import Arch
from sne_core.baselines.common import (FeatureNorm, UnsupportedArchitecture, arch_check, check_groups,
                                       module_device)
from sne_core.layers import mlp
from sne_core.weights import WeightSet

N_STATS = 7
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
# 16 tensors = 8 parameterised layers: room for Arch1 (8 tensors) and Arch2 (10) with margin, while
# keeping the feature vector small (112 numbers). Deeper archs are refused, not silently truncated.
DEFAULT_MAX_TENSORS = 16


def check_tensor_count(arch: Arch, max_tensors: int, who: str) -> None:
    n = len(arch.layout)
    if n > max_tensors:
        raise UnsupportedArchitecture(
            f"{who} reads at most max_tensors={max_tensors} parameter tensors; {arch.name!r} has {n} "
            f"({n // 2} parameterised layers). Build the predictor with max_tensors >= {n} to read it")


def tensor_statistics(ws: WeightSet, max_tensors: int = DEFAULT_MAX_TENSORS) -> torch.Tensor:
    """[N, max_tensors * 7]: (mean, var, q0, q25, q50, q75, q100) per tensor in layout order, zero-padded."""
    check_tensor_count(ws.arch, max_tensors, "tensor_statistics")
    n = len(ws)
    out = ws.params[0].new_zeros(n, max_tensors, N_STATS, dtype=torch.float32)
    for j, p in enumerate(ws.params):
        x = p.reshape(n, -1).float()                                        # [N, numel]
        q = torch.quantile(x, torch.tensor(QUANTILES, device=x.device), dim=1)  # [5, N]
        # population variance: a 1-element tensor (possible in user archs) gets 0, not NaN
        out[:, j] = torch.cat([x.mean(1, keepdim=True), x.var(1, correction=0, keepdim=True), q.T], dim=1)
    return out.reshape(n, max_tensors * N_STATS)


class StatNNPredictor(nn.Module):
    """tensor statistics [B, T*7] -> standardise -> MLP -> logit [B]."""

    def __init__(self, train_archs: list[Arch], max_tensors: int = DEFAULT_MAX_TENSORS, hidden: int = 256,
                 n_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        self.max_tensors = max_tensors
        for a in train_archs:
            self.check_arch(a)
        d = max_tensors * N_STATS
        # standardised per feature on train: the raw statistics span orders of magnitude (variances ~1e-4..1)
        self.norm = FeatureNorm(d)
        self.net = mlp([d] + [hidden] * (n_layers - 1) + [1], dropout)

    @arch_check
    def check_arch(cls, self, arch: Arch) -> None:
        check_tensor_count(arch, DEFAULT_MAX_TENSORS if self is None else self.max_tensors, "StatNN")

    def features(self, groups: list[WeightSet]) -> torch.Tensor:
        check_groups(groups, self.check_arch)
        dev = module_device(self)
        return torch.cat([tensor_statistics(ws.to(dev), self.max_tensors) for ws in groups])  # [B, T*7]

    @torch.no_grad()
    def prepare(self, train_groups: list[WeightSet]) -> None:
        """Fit the feature standardisation on the training networks (call once before training)."""
        self.norm.fit(self.features(train_groups))

    def forward(self, groups: list[WeightSet]) -> torch.Tensor:
        return self.net(self.norm(self.features(groups))).squeeze(-1)  # [B]
