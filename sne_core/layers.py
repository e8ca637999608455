"""Two small pieces shared by SNE and the baselines: the predictor MLP and the sinusoidal
position encoding (used for layer depth and layer type)."""
from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU [-> Dropout] ... -> Linear; no activation after the last layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def sinusoidal(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal encoding of integer positions: pos [n] -> [n, dim]."""
    i = torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32)
    angle = pos.float()[:, None] / torch.pow(10000.0, i / dim)[None]  # [n, dim/2]
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(len(pos), -1)[:, :dim]
