"""DeepSets over all weights of a network as one set of scalars (SPEC §5): architecture-agnostic.

Element = (value, layer kind, depth): the value, a one-hot of (conv|linear) x (weight|bias) and a
sinusoidal encoding of the layer's depth. phi embeds each element, a masked mean pools the set,
rho maps the pooled vector to a logit. The mean (not the sum) keeps the code on one scale for
archs of different sizes (Arch1 4,970 scalars, Arch2 2,464), which cross-architecture transfer needs.

Memory: every scalar is an element (no subsampling), so activations are [B, P, width] with
P ~ 5k for Arch1. phi's width defaults to 32 (~0.6 MB per network per activation in float32), a
batch of 128 Arch1 networks stays well under 1 GB; the first phi layer is split into a value part
and a position part so the position features are projected once per architecture, not per network.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sne_core.archs import Arch
from sne_core.baselines.common import (FeatureNorm, UnsupportedArchitecture, arch_check, check_groups,
                                       module_device)
from sne_core.layers import mlp, sinusoidal
from sne_core.weights import WeightSet

KINDS = ("conv.weight", "conv.bias", "linear.weight", "linear.bias")


def position_features(arch: Arch, depth_dim: int) -> torch.Tensor:
    """[P, len(KINDS) + depth_dim]: the (kind, depth) features of every scalar, in WeightSet.flat() order."""
    rows = []
    for p in arch.layout:
        kind = torch.zeros(len(KINDS))
        kind[KINDS.index(f"{p.kind}.{p.role}")] = 1.0
        rows.append(torch.cat([kind, sinusoidal(torch.tensor([p.depth]), depth_dim)[0]]))
    counts = torch.tensor([p.numel for p in arch.layout])
    return torch.repeat_interleave(torch.stack(rows), counts, dim=0)


class DeepSetsPredictor(nn.Module):
    """set of P elements per network -> phi [B, P, w] -> masked mean [B, w] -> rho -> logit [B]."""

    def __init__(self, train_archs: list[Arch], width: int = 32, phi_layers: int = 3, rho_hidden: int = 128,
                 rho_layers: int = 2, depth_dim: int = 8, dropout: float = 0.0):
        super().__init__()
        for a in train_archs:
            self.check_arch(a)
        self.depth_dim = depth_dim
        self.norm = FeatureNorm(1)  # one scale for all values: relative scales across layers carry signal
        # phi's first layer, split: Linear([value, pos]) = value * w_value + Linear(pos)
        self.w_value = nn.Parameter(torch.randn(width) / math.sqrt(2.0))
        self.pos_proj = nn.Linear(len(KINDS) + depth_dim, width)
        self.phi = mlp([width] * phi_layers)               # applied after ReLU of the first layer
        self.rho = mlp([width] + [rho_hidden] * (rho_layers - 1) + [1], dropout)

    @arch_check
    def check_arch(cls, self, arch: Arch) -> None:
        for p in arch.layout:
            if f"{p.kind}.{p.role}" not in KINDS:
                raise UnsupportedArchitecture(
                    f"DeepSets encodes layer kinds {', '.join(KINDS)}; {arch.name!r} tensor {p.name!r} is "
                    f"{p.kind}.{p.role}")

    def _values(self, groups: list[WeightSet]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[Arch]]:
        """Padded values [B, Pmax], mask [B, Pmax], group index [B], and the group archs."""
        check_groups(groups, self.check_arch)
        dev = module_device(self)
        p_max = max(ws.arch.n_params for ws in groups)
        vals, masks, gidx = [], [], []
        for g, ws in enumerate(groups):
            flat = ws.flat().to(dev, torch.float32)                        # [N_g, P_g]
            pad = p_max - flat.shape[1]
            vals.append(nn.functional.pad(flat, (0, pad)))
            mask = torch.zeros(len(ws), p_max, dtype=torch.bool, device=dev)
            mask[:, : flat.shape[1]] = True
            masks.append(mask)
            gidx.append(torch.full((len(ws),), g, dtype=torch.long, device=dev))
        return torch.cat(vals), torch.cat(masks), torch.cat(gidx), [ws.arch for ws in groups]

    @torch.no_grad()
    def prepare(self, train_groups: list[WeightSet]) -> None:
        """Fit the value standardisation on all scalars of the training networks."""
        v, m, _, _ = self._values(train_groups)
        self.norm.fit(v[m])

    def forward(self, groups: list[WeightSet]) -> torch.Tensor:
        v, mask, gidx, archs = self._values(groups)                        # [B, Pmax], [B, Pmax], [B]
        if not bool(self.norm.fitted) and self.training:
            self.norm.fit(v[mask])                                         # padding must not count
        v = self.norm(v[..., None])                                        # [B, Pmax, 1]
        dev, p_max = v.device, v.shape[1]
        pos = torch.stack([nn.functional.pad(position_features(a, self.depth_dim), (0, 0, 0, p_max - a.n_params))
                           for a in archs]).to(dev)                        # [G, Pmax, F]
        h = torch.relu(v * self.w_value + self.pos_proj(pos)[gidx])        # [B, Pmax, w]
        h = self.phi(h)                                                    # [B, Pmax, w]
        m = mask[..., None].float()
        pooled = (h * m).sum(1) / m.sum(1)                                 # [B, w]
        return self.rho(pooled).squeeze(-1)                               # [B]
