"""A predictor made of independently trained predictors: its logit is the mean of theirs.

Two uses, both built by `sne_core.train.fit`: a deep ensemble of one method (`TrainConfig.members`,
members differing only in seed) and a composite method whose parts are different methods
(`Method.parts`, e.g. `sne_statnn`: SNE and StatNN, each trained with its own defaults and, through
`TrainConfig.part_train`, its own settings: a part may be a deep ensemble itself).
Why the second exists: on the 2,000-network MNIST Arch1 zoo SNE and StatNN each rank the 1,000
test networks at Kendall tau ~0.79, but their mean logit ranks them at ~0.82, more than three
seeds of either method together (docs/RESULTS.md, session 8): the set encoder and the weight
statistics make different mistakes.
"""
from __future__ import annotations

import torch
from torch import nn

from sne_core.weights import WeightSet


# Why a member must be a torch predictor: `fit` refuses such a composite before training any part.
NOT_A_MEMBER = "GBM predicts accuracies, not logits, and cannot be a member"


class Ensemble(nn.Module):
    """Mean logit of its members: list[WeightSet] -> logits [B], the predictor contract."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        for m in members:
            if not isinstance(m, nn.Module):
                raise TypeError(f"an ensemble averages torch predictors' logits; got a {type(m).__name__} "
                                f"({NOT_A_MEMBER})")
        self.members = nn.ModuleList(members)

    def forward(self, groups: list[WeightSet]) -> torch.Tensor:
        return torch.stack([m(groups) for m in self.members]).mean(0)     # [members, B] -> [B]

    def check_arch(self, arch) -> None:
        """An ensemble reads an architecture only if every member does (each raises its own reason)."""
        for m in self.members:
            if hasattr(m, "check_arch"):
                m.check_arch(arch)
