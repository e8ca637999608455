"""One place that turns a device name into a torch device ("auto" = CUDA when torch sees one)."""
from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        # fail here, with the name, rather than deep inside the first .to(device)
        raise ValueError(f"device {device!r}: torch sees no CUDA device; use 'auto' or 'cpu'")
    return resolved
