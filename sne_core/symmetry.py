"""Function-preserving hidden-unit permutations and the logit-invariance regulariser (SPEC §4.6).

Permuting the output units of a hidden layer, and the matching inputs of the next parameter
layer, leaves the network's function unchanged: activations, dropout and pooling act per
channel, so they commute with the permutation. Where the next layer reads the units:

    conv -> (act|dropout|pool)* -> conv            in-channels of the next kernel (dim 2)
    conv -> (act|dropout|pool)* -> gap -> linear   input columns of the linear, one per channel
    conv -> (act|dropout|pool)* -> flatten -> linear  column *blocks*: flatten is channel-major, so
                                                   channel ch owns columns ch*H*W .. ch*H*W + H*W - 1
    linear -> (act|dropout)* -> linear             input columns of the linear

The last layer's outputs (the logits) are never permuted. Everything is read from
`arch.spec.layers` and `arch.shapes`, so any sequential spec works, and every network of a
WeightSet gets its own permutations through batched gathers (no per-network loop).
"""
from __future__ import annotations

import torch

from sne_core.archs import Arch
from sne_core.weights import WeightSet


def _links(arch: Arch) -> list[tuple[int, int | None]]:
    """For each parameter layer except the last: how the next parameter layer reads its units.

    Returns [(depth, block)] where block is None when the next layer indexes the units directly
    (conv in-channels, gap, linear), or H*W when a flatten sits between them.
    """
    layers = arch.spec.layers
    param_idx = [i for i, l in enumerate(layers) if l["type"] in ("conv", "linear")]
    links = []
    for depth, (i, j) in enumerate(zip(param_idx[:-1], param_idx[1:])):
        block = None
        for t in range(i + 1, j):
            if layers[t]["type"] == "flatten":
                C, H, W = arch.shapes[t - 1]  # the activation shape entering the flatten
                block = H * W
        links.append((depth, block))
    return links


def permute_hidden(ws: WeightSet, generator: torch.Generator | None = None) -> WeightSet:
    """A function-equivalent copy of every network in `ws`, each with its own random permutation
    of every hidden layer's units."""
    arch, N = ws.arch, len(ws)
    params = list(ws.params)
    pos = {(info.depth, info.role): j for j, info in enumerate(arch.layout)}
    dev = ws.params[0].device
    gdev = generator.device if generator is not None else dev
    for depth, block in _links(arch):
        w, b = pos[(depth, "weight")], pos[(depth, "bias")]
        n_units = params[w].shape[1]
        perm = torch.rand(N, n_units, generator=generator, device=gdev).argsort(dim=1).to(dev)  # [N, units]

        # outputs of this layer: new unit i = old unit perm[i] (weight rows and bias entries)
        idx = perm.view(N, n_units, *([1] * (params[w].dim() - 2))).expand_as(params[w])
        params[w] = params[w].gather(1, idx)
        params[b] = params[b].gather(1, perm)

        # inputs of the next layer: its weight is [N, out, in(, k, k)]; permute dim 2
        nxt = pos[(depth + 1, "weight")]
        cols = perm if block is None else (perm[:, :, None] * block + torch.arange(block, device=dev)).reshape(N, -1)
        wn = params[nxt]
        idx = cols[:, None].reshape(N, 1, -1, *([1] * (wn.dim() - 3))).expand_as(wn)
        params[nxt] = wn.gather(2, idx)
    return WeightSet(arch, params)


def invariance_penalty(model: torch.nn.Module, groups: list[WeightSet], logits: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-invariance regulariser (Moskalev et al. 2023): 0.5 * mean((f(x) - f(g x))^2).

    `logits` = model(groups), already computed by the training step (so f(x) is not run twice);
    g draws fresh function-preserving permutations. Gradients flow through both terms. Works
    for any predictor obeying the contract forward(list[WeightSet]) -> logits [B].
    """
    permuted = [permute_hidden(ws, generator) for ws in groups]
    return 0.5 * (logits - model(permuted)).pow(2).mean()
