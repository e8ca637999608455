"""Pad-chunk: one parameter tensor -> fixed-size chunks of elements (SPEC §4 step 1).

An *element* is what SNE treats as one set member: a conv kernel's k*k values stay together,
a linear weight or a bias is a single value. Elements are laid out row-major over
(out, in), so one output neuron's incoming weights are consecutive and a chunk of `c`
elements holds whole neurons whenever `in` divides `c`. The last chunk is zero-padded; the
number of valid elements per chunk is the mask. The store and SNE use these same functions.
"""
from __future__ import annotations

import torch

from sne_core.archs import ParamInfo

# Chunk size c in elements (*choose*). The paper's ablation found accuracy flat in c except at
# its largest value, so c is a memory knob: 32 keeps a whole 16- or 8-input neuron in one chunk
# for Arch1/Arch2 while the chunk-level attention stays small (32 x 32).
DEFAULT_CHUNK_SIZE = 32


def element_size(info: ParamInfo) -> int:
    """Values per element: k*k for a conv kernel, 1 otherwise."""
    return info.shape[2] * info.shape[3] if info.kind == "conv" and info.role == "weight" else 1


def tensor_elements(t: torch.Tensor, info: ParamInfo) -> torch.Tensor:
    """[N, *info.shape] -> [N, n_elements, element_size]."""
    return t.reshape(t.shape[0], -1, element_size(info))


def pad_chunk(elements: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, n, e] -> chunks [N, m, c, e] (zero padded) and valid [m] (valid elements per chunk)."""
    n_net, n, e = elements.shape
    m = -(-n // chunk_size)
    pad = m * chunk_size - n
    if pad:
        elements = torch.cat([elements, elements.new_zeros(n_net, pad, e)], dim=1)
    valid = torch.full((m,), chunk_size, dtype=torch.long)
    valid[-1] = chunk_size - pad
    return elements.reshape(n_net, m, chunk_size, e), valid


def chunk_tensor(t: torch.Tensor, info: ParamInfo, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """[N, *info.shape] -> (chunks [N, m, c, e], valid [m])."""
    return pad_chunk(tensor_elements(t, info), chunk_size)


def unchunk(chunks: torch.Tensor, valid: torch.Tensor, info: ParamInfo) -> torch.Tensor:
    """Inverse of chunk_tensor for one network: chunks [m, c, e] -> tensor of info.shape."""
    parts = [chunks[j, : int(v)] for j, v in enumerate(valid)]
    return torch.cat(parts, dim=0).reshape(info.shape)
