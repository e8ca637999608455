"""What zoo training produces per network; the store writes and reads exactly these."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sne_core.hparams import HParams

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"


@dataclass
class Checkpoint:
    epoch: int                       # 0 = at initialisation
    train_acc: float
    train_loss: float
    test_acc: float
    test_loss: float
    state: dict[str, torch.Tensor]   # CPU float32, keys as in arch.layout


@dataclass
class NetworkResult:
    hparams: HParams
    status: str = STATUS_OK          # "ok" or "diverged" (loss went NaN/Inf; training stopped)
    diverged_epoch: int | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def model_id(self) -> int:
        return self.hparams.model_id
