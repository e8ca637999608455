"""In-memory form of a zoo's weights: networks of one architecture, parameters stacked."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sne_core.archs import Arch


@dataclass
class WeightSet:
    """`params[j]` has shape [N, *arch.layout[j].shape]; row i of every tensor is network i."""
    arch: Arch
    params: list[torch.Tensor]

    def __post_init__(self):
        if len(self.params) != len(self.arch.layout):
            raise ValueError(f"{self.arch.name}: expected {len(self.arch.layout)} tensors, got {len(self.params)}")
        n = self.params[0].shape[0]
        for p, info in zip(self.params, self.arch.layout):
            if tuple(p.shape) != (n, *info.shape):
                raise ValueError(f"{self.arch.name} {info.name}: expected shape {(n, *info.shape)}, got {tuple(p.shape)}")

    def __len__(self) -> int:
        return self.params[0].shape[0]

    def subset(self, idx) -> "WeightSet":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return WeightSet(self.arch, [p[idx] for p in self.params])

    def to(self, device, dtype=None) -> "WeightSet":
        return WeightSet(self.arch, [p.to(device=device, dtype=dtype) for p in self.params])

    def flat(self) -> torch.Tensor:
        """[N, n_params]: every parameter in layout order (the MLP baseline's input)."""
        return torch.cat([p.reshape(len(self), -1) for p in self.params], dim=1)

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        return {info.name: p[i] for info, p in zip(self.arch.layout, self.params)}

    @staticmethod
    def stack(arch: Arch, states: list[dict[str, torch.Tensor]]) -> "WeightSet":
        return WeightSet(arch, [torch.stack([s[info.name] for s in states]) for info in arch.layout])
