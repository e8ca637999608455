"""One place that turns a device name into a torch device ("auto" = CUDA when torch sees one),
and says in words what machine a result came from."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        # fail here, with the name, rather than deep inside the first .to(device)
        raise ValueError(f"device {device!r}: torch sees no CUDA device; use 'auto' or 'cpu'")
    return resolved


def describe_device(device: torch.device) -> str:
    """The card's name on CUDA; on the CPU its model name and core count (platform.processor() is
    empty on Linux, so run.json used to say only "x86_64")."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []) if line.startswith("model name")]
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"
