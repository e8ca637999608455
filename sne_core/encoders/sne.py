"""SNE: Set-based Neural network Encoder (Andreis et al., NeurIPS 2024), SPEC §4.

chunk -> layer -> network, one set of parameters for every architecture:

    elements [*, c, 49] --embed--> [*, c, h] --Φ1, +type/depth enc, Φ2, PMA--> chunk vectors  [n_chunks, h]
    chunk vectors of one tensor    --Φ3, +depth enc, PMA-------------------> tensor vectors [n_tensors, h]
    weight + bias vector of a layer --SAB(SAB), PMA (separated layer enc)--> layer vectors  [n_layers, h]
    layer vectors of one network   --+depth enc, Φ4, PMA-------------------> code z         [B, h]
    z --MLP--> logit of the predicted test accuracy                                          [B]

`embed` reads each value twice: scaled linearly and through a log-magnitude channel (SNEConfig.log_floor).
With SNEConfig.moments, each tensor vector also gets the exact mean of a learned feature psi of its elements
(a DeepSets sum beside the attention pools): elements --embed, psi, mean over the tensor, Linear--> + tensor vector.
With SNEConfig.statistics_branch, a second set reads each tensor's exact statistics, standardised per slot, beside
the chunk path; its code joins z:
    each tensor's mean, std, quantiles --standardise per (type, depth), Linear, +type/depth enc--> tokens [B, n_tensors, h]
    tokens --Φ5, PMA--> z_stats [B, h];  z <- [z, z_stats]                                                  [B, 2h]

Batched: every stage runs on one padded tensor holding all networks of the mini-batch, across
layers and architectures (Python loops only run over the few parameter tensors of each
architecture, to chunk them, and over memory slices). Memory: the chunk encoder reads at most
`chunk_budget` chunks at a time and the layer encoder at most `chunk_budget * chunk_size` chunk
vectors at a time, each slice under activation checkpointing when there is more than one slice,
so peak memory is set by the budget, not by the size of the networks (bench/encoder.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sne_core.archs import MAX_KERNEL, Arch
from sne_core.baselines.statnn import N_STATS, tensor_statistics
from sne_core.chunking import DEFAULT_CHUNK_SIZE, chunk_tensor, element_size
from sne_core.encoders import UnsupportedArchitecture
from sne_core.encoders.set_blocks import PMA, SetEncoder
from sne_core.layers import mlp, sinusoidal
from sne_core.weights import WeightSet

# Layer-type codes for the sinusoidal type encoding (conv/linear x weight/bias).
TYPE_CODE = {("conv", "weight"): 0, ("conv", "bias"): 1, ("linear", "weight"): 2, ("linear", "bias"): 3}
# Statistics branch: slots (type, depth) standardised one by one up to this depth; deeper tensors use their type's row.
MAX_STAT_DEPTH = 16


@dataclass
class SNEConfig:
    # Defaults sized for the 2-core CPU demo. Cost is ~ (elements per network) x h^2, so h sets the
    # pace: a forward + backward on 32 Arch1 networks (832 chunks, 26k elements) took ~1.0 s at
    # h = 32 / 2 heads, ~1.5 s at 4 heads and ~2.9 s at h = 64 (1 thread on a loaded 2-core box).
    # h = 32 is still far wider than the weight statistics that already rank these zoos well
    # (StatNN reads 7 numbers per tensor); raise it on a GPU.
    hidden: int = 32                      # h, the width of every set block
    heads: int = 2
    # c, elements per chunk: a memory knob (SPEC §4). Measured, not only assumed: c = 256 (a whole Arch1 tensor
    # in one chunk) gave 0.710 against 0.703 test tau and 0.747 against 0.755 validation on Fashion-MNIST/Arch1,
    # at ~5x the time (docs/RESULTS.md, session 27), so the cheap c stays.
    chunk_size: int = DEFAULT_CHUNK_SIZE
    # Max chunks through the chunk encoder at once (~ chunk_budget * c * h * 4 B per saved
    # activation). 2048 holds a whole demo batch (32 Arch2 nets = 1,248 chunks) in one slice, so
    # the demo never pays for recomputation; larger networks stream in slices of this size.
    chunk_budget: int = 2048
    max_kernel: int = MAX_KERNEL          # elements are zero-padded to max_kernel**2 values
    head_widths: tuple[int, ...] = (64,)  # hidden widths of the predictor MLP on z (cheap: one row per network)
    dropout: float = 0.0                  # in the predictor MLP only (the set blocks are small)
    checkpoint: bool = True               # activation checkpointing of the slices when streaming
    # BatchNorm of z before the head (0 = none). 0.3 rather than torch's 0.1: CPU-size zoos give few
    # steps an epoch while the encoder moves fast, and slow running statistics miscalibrated evaluation.
    bn_momentum: float = 0.3
    # Log-magnitude input channel: each value u (already divided by its type's RMS) is also fed as
    # sign(u) * log1p(|u| / log_floor) through a second, bias-free projection. 0 = off. Why: the zoo
    # samples init scales log-uniformly, so networks' weight scales span ~3 decades (on a 10-epoch MNIST
    # zoo, per-network RMS from <0.01 to ~5x the zoo's), and after a linear embedding and LayerNorm the
    # small-scale networks all look alike; the log channel spreads them out evenly. StatNN and GBM read
    # per-tensor quantiles, which carry that scale directly. Measured (docs/RESULTS.md, "The
    # log-magnitude channel"): +0.035 test tau on a 1,000-network MNIST zoo, +0.006 on Fashion-MNIST.
    # A floor of 0.001 was worse on Fashion-MNIST (validation tau 0.722 against 0.738).
    log_floor: float = 0.01
    # Moment path: beside the attention pools, each tensor's exact mean of a learned feature psi of its embedded
    # elements (a DeepSets sum over the tensor, read before any LayerNorm), projected and added to the tensor
    # vector. Why try it: the weight statistics rank the networks that learned by the exact spread of each
    # tensor, which the two levels of attention pooling hold only approximately (docs/RESULTS.md, sessions 11
    # and 30); a mean of psi holds piecewise-linear moments such as E|w| exactly. Why it is off: measured
    # against the path off, paired by seed (session 32, every image once), test tau moved by +0.031, +0.010,
    # -0.010, -0.010, +0.023 on Fashion-MNIST/Arch2 with 400 training networks (validation +0.023), +0.012 and
    # +0.014 on MNIST/Arch2 and digits/Arch2 with 160 (3 seeds each), +0.004 on Fashion-MNIST/Arch1 with 400 (4 seeds):
    # +0.009 over 15 fits, 10 higher, about two standard errors. Too small to retrain every table for, and the
    # encoder benchmark's memory ratio (500k vs 5k parameters) rises from 1.87 to 1.99 against the target of 2.
    moments: bool = False
    # Statistics branch: each tensor's exact statistics (StatNN's mean, std and 0/25/50/75/100 % quantiles, divided by
    # the type's input scale, each as is and log-compressed: 14 numbers), standardised per slot (type x depth) on the
    # training networks, are one token of a second set; SAB, SAB, PMA over a network's tokens, and that code is
    # concatenated to z. Quantiles are set functions (a sort pool), so SNE stays one set encoder for any architecture.
    # A slot the training networks lack (a depth another architecture does not have) uses its type's standardisation.
    # Measured (docs/RESULTS.md, session 36), paired by seed with the default: in distribution +0.023 +- 0.005 test tau
    # over 16 fits on five zoos, 14 higher (Fashion-MNIST/Arch1 +0.042 on 4 of 4; where SNE trails StatNN it halves the
    # gap). The same statistics added to the tensor vectors instead gave +0.006, so it is the separate set that helps.
    # Across datasets (same architecture) it gained more: +0.066 and +0.040 (one seed each, Fashion-MNIST/Arch2 <->
    # MNIST/Arch2). Why it is off: across architectures it loses on average. Fashion-MNIST Arch1 -> Arch2 0.577 and
    # 0.633 against 0.647 and 0.635 (seeds 0, 1), Arch2 -> Arch1 0.586 and 0.616 against 0.630 and 0.602: -0.026 over
    # 4 fits; standardised per type instead of per slot 0.586 (seed 0). The branch reads the statistics as StatNN
    # does, and StatNN transfers across architectures worse than SNE (cpu-pass tables). Turn it on for networks of
    # the training architectures (`--hyper '{"sne": {"statistics_branch": true}}'`). With the ranking loss beside it
    # (`TrainConfig.rank_weight` 0.3) the two gains add up: Fashion-MNIST/Arch1 with 800 training networks 0.783 over
    # 3 seeds against 0.70 for the default and 0.807 for StatNN (docs/RESULTS.md, session 37).
    statistics_branch: bool = False


def _centre_index(k: int, K: int) -> list[int]:
    """Positions of a k x k kernel placed at the centre of a K x K grid, row-major."""
    o = (K - k) // 2
    return [(o + r) * K + (o + s) for r in range(k) for s in range(k)]


def _slices(parts, budget: int):
    """Consecutive slices of at most `budget` chunks across parts (tensors of any layer or architecture).
    Yields lists of pieces (views into the parts); `_join` copies one slice into one tensor."""
    pieces, size = [], 0
    for chunks, valid, code, depth in parts:
        start = 0
        while start < len(chunks):
            take = min(budget - size, len(chunks) - start)
            pieces.append((chunks[start:start + take], valid[start:start + take], code, depth))
            size, start = size + take, start + take
            if size == budget:
                yield pieces
                pieces, size = [], 0
    if pieces:
        yield pieces


def _join(pieces):
    """pieces -> (elements [n, c, e], valid [n], type code [n], depth [n])."""
    dev = pieces[0][0].device
    return (torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces]),
            torch.cat([torch.full((len(p[0]),), p[2], device=dev) for p in pieces]),
            torch.cat([torch.full((len(p[0]),), p[3], device=dev) for p in pieces]))


@dataclass
class _Chunks:
    """The mini-batch as sets, each index tensor in one fixed order (see SNE._chunk)."""
    sources: dict[int, list[tuple[torch.Tensor, torch.Tensor, int, int]]]
    #        element size e -> parts (chunks [n, c, e], valid elements per chunk [n], type code, depth),
    #        one part per parameter tensor of an architecture, all its networks; chunks are views of
    #        the weights where possible and are copied together only one budget-sized slice at a time
    chunk_set: torch.Tensor    # [n_chunks]  which tensor-set each chunk (in source order) belongs to
    set_len: torch.Tensor      # [n_sets]    chunks per tensor-set (one set = one tensor of one net)
    set_elems: torch.Tensor    # [n_sets]    elements per tensor-set (its valid chunk members)
    set_depth: torch.Tensor    # [n_sets]
    set_layer: torch.Tensor    # [n_sets]    which layer (of which network) the tensor belongs to
    set_slot: torch.Tensor     # [n_sets]    its place within the layer (weight 0, bias 1)
    layer_net: torch.Tensor    # [n_layers]  network index in the batch
    layer_depth: torch.Tensor  # [n_layers]
    n_nets: int
    set_code: torch.Tensor | None = None   # [n_sets] type code of each tensor (statistics branch)
    set_stats: torch.Tensor | None = None  # [n_sets, 14] its standardised statistics (statistics branch)


class SNE(nn.Module):
    """Predicts a network's test accuracy (as a logit) from its weights, for any architecture."""

    def __init__(self, config: SNEConfig | None = None):
        super().__init__()
        self.config = cfg = config or SNEConfig()
        h, nh = cfg.hidden, cfg.heads
        if h % 4:
            raise ValueError(f"SNEConfig.hidden must be a multiple of 4 (type + depth encodings split it), got {h}")
        if not cfg.log_floor >= 0:
            raise ValueError(f"SNEConfig.log_floor must be >= 0 (0 turns the log-magnitude channel off), got {cfg.log_floor}")
        # Every element is zero-padded to a max_kernel x max_kernel grid, the kernel at the centre, and
        # projected to h. A 3x3 kernel is the same filter as that 7x7 grid, so kernels of every size share
        # the projection weights of the positions they cover (Arch1's 3x3 and Arch2's 5x5 kernels meet
        # in one space, which cross-architecture transfer needs); a linear weight or a bias is a 1x1 kernel.
        self.embed = nn.Linear(cfg.max_kernel ** 2, h)
        # Per type (conv/linear x weight/bias), the RMS of the training networks' values. Raw weights
        # are ~0.01-0.1, so embed(w) would be swamped by the embedding's bias and every post-LN token
        # would look alike (measured: codes of different networks differed by ~0.3% at init and SNE
        # could not fit a tiny zoo). Dividing by one global scale per type -- not per network --
        # brings values to O(1) and keeps the differences in weight scale between networks, which
        # are among the strongest signals of generalisation. Fitted by `prepare` on training data only.
        self.register_buffer("input_scale", torch.ones(len(TYPE_CODE)))
        self.embed_log = nn.Linear(cfg.max_kernel ** 2, h, bias=False) if cfg.log_floor > 0 else None
        # The sinusoidal type/depth encodings are O(1) per dimension and identical for every network:
        # added at full size they drown the (small) differences between networks before each pooling
        # (measured at init: 1.6x closer codes). A learned scale, starting at 0.1, lets training decide.
        self.enc_scale = nn.Parameter(torch.tensor(0.1))
        self.phi1, self.phi2, self.pool_chunk = SetEncoder(h, nh), SetEncoder(h, nh), PMA(h, nh)  # chunk encoder
        self.phi3, self.pool_tensor = SetEncoder(h, nh), PMA(h, nh)                                # layer encoder
        self.sep, self.pool_layer = SetEncoder(h, nh), PMA(h, nh)                                  # separated layer enc.
        self.phi4, self.pool_net = SetEncoder(h, nh), PMA(h, nh)                                   # network encoder
        if cfg.moments:  # see SNEConfig.moments
            self.psi, self.moment_proj = nn.Sequential(nn.Linear(h, h), nn.ReLU(inplace=True)), nn.Linear(h, h)
        if cfg.statistics_branch:  # see SNEConfig.statistics_branch
            self.stat_embed, self.phi5, self.pool_stats = nn.Linear(2 * N_STATS, h), SetEncoder(h, nh), PMA(h, nh)
            # Mean and std of each statistic over the training networks (fitted by `prepare`), per slot (type, depth <
            # MAX_STAT_DEPTH) and per type (row MAX_STAT_DEPTH, the fallback). Slots never fitted stay NaN and use
            # their type's row, which starts as 0 / 1 (no standardisation, like input_scale's 1 before `prepare`).
            shape = (len(TYPE_CODE), MAX_STAT_DEPTH + 1, 2 * N_STATS)
            stat_mean, stat_std = torch.full(shape, float("nan")), torch.full(shape, float("nan"))
            stat_mean[:, MAX_STAT_DEPTH], stat_std[:, MAX_STAT_DEPTH] = 0.0, 1.0
            self.register_buffer("stat_mean", stat_mean)
            self.register_buffer("stat_std", stat_std)
        # Batch-normalise z across networks before the head: every PMA averages over many similar
        # members, so the codes of different networks are close (measured at init on a real MNIST
        # zoo: across-network std ~5% of the codes' scale). Standardising each feature over the batch
        # makes the differences O(1) for the head and scales the encoder's gradients up to match.
        bn = [nn.BatchNorm1d(self.code_dim, momentum=cfg.bn_momentum)] if cfg.bn_momentum > 0 else []
        self.head = nn.Sequential(*bn, *mlp([self.code_dim, *cfg.head_widths, 1], cfg.dropout))  # z -> logit [B, 1]

    # ---- architecture check -------------------------------------------------------------------
    @classmethod
    def check_arch(cls, arch: Arch, max_kernel: int | None = None) -> None:
        """Raise UnsupportedArchitecture if a conv kernel exceeds max_kernel (default SNEConfig's)."""
        K = max_kernel or SNEConfig.max_kernel
        for p in arch.layout:
            if p.kind == "conv" and p.role == "weight" and (p.shape[2] > K or p.shape[3] > K or p.shape[2] != p.shape[3]):
                raise UnsupportedArchitecture(
                    f"architecture {arch.name!r}, tensor {p.name}: SNE reads square conv kernels of size 1..{K}, "
                    f"got {p.shape[2]}x{p.shape[3]} (raise SNEConfig.max_kernel to read it)")

    @torch.no_grad()
    def prepare(self, train_groups: list[WeightSet]) -> None:
        """Fit `input_scale` on the training networks (called once by sne_core.train.fit)."""
        sq, n = torch.zeros(len(TYPE_CODE)), torch.zeros(len(TYPE_CODE))
        for ws in train_groups:
            for p, info in zip(ws.params, ws.arch.layout):
                code = TYPE_CODE[(info.kind, info.role)]
                sq[code] += p.detach().double().pow(2).sum().item()
                n[code] += p.numel()
        rms = (sq / n.clamp(min=1)).sqrt()
        self.input_scale.copy_(torch.where(rms > 0, rms, torch.ones_like(rms)).float())
        if self.config.statistics_branch:  # after input_scale, which the statistics are divided by
            self.stat_mean[:, :MAX_STAT_DEPTH], self.stat_std[:, :MAX_STAT_DEPTH] = float("nan"), float("nan")
            stats, code, depth = (torch.cat(x) for x in zip(*(self._statistics(ws) for ws in train_groups)))
            for c in code.unique().tolist():
                of_type = code == c
                self._fit_stat_row(c, MAX_STAT_DEPTH, stats[of_type])            # the type's row: the fallback
                for d in depth[of_type].unique().tolist():
                    of_slot = of_type & (depth == d)
                    if d < MAX_STAT_DEPTH and of_slot.sum() >= 2:   # one network gives no spread: keep the fallback
                        self._fit_stat_row(c, d, stats[of_slot])

    def _fit_stat_row(self, code: int, row: int, stats: torch.Tensor) -> None:
        self.stat_mean[code, row] = stats.mean(0)
        self.stat_std[code, row] = stats.std(0).nan_to_num(1.0).clamp(min=1e-6)

    def _statistics(self, ws: WeightSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Statistics branch input, unstandardised: [t * N, 14] in set order (tensor of the layout, then network),
        each tensor's 7 statistics divided by its type's input scale, as is and log-compressed; type codes and
        depths [t * N]."""
        dev = self.embed.weight.device
        N, t = len(ws), len(ws.arch.layout)
        st = tensor_statistics(ws.to(dev), t).view(N, t, N_STATS).transpose(0, 1)   # [t, N, 7] (no copy if there)
        st[..., 1] = st[..., 1].sqrt()                                                # variance -> std, in value units
        code = torch.tensor([TYPE_CODE[(i.kind, i.role)] for i in ws.arch.layout], device=dev)
        st = (st / self.input_scale[code][:, None, None]).reshape(t * N, N_STATS)
        st = torch.cat([st, torch.sign(st) * torch.log1p(st.abs() / max(self.config.log_floor, 1e-3))], dim=1)
        depth = torch.tensor([i.depth for i in ws.arch.layout], device=dev)
        return st, code.repeat_interleave(N), depth.repeat_interleave(N)

    def _standardised_statistics(self, ws: WeightSet) -> tuple[torch.Tensor, torch.Tensor]:
        """`_statistics` standardised by each tensor's slot, or by its type where `prepare` saw no such slot;
        -> ([t * N, 14], type codes [t * N])."""
        st, code, depth = self._statistics(ws)
        depth_row = depth.clamp(max=MAX_STAT_DEPTH)
        fitted = ~self.stat_mean[code, depth_row, 0].isnan()
        row = torch.where(fitted, depth_row, MAX_STAT_DEPTH)
        return (st - self.stat_mean[code, row]) / self.stat_std[code, row], code

    # ---- pad-chunk ----------------------------------------------------------------------------
    def _chunk(self, groups: list[WeightSet]) -> _Chunks:
        """Chunk every tensor of every network; loops run over architectures and their tensors only."""
        if not groups:
            raise ValueError("SNE: got no weight sets (expected a non-empty list of WeightSet)")
        c, dev = self.config.chunk_size, self.embed.weight.device
        parts: dict[int, list] = {}
        set_len, set_elems, set_depth, set_layer, set_slot, chunk_set_parts = [], [], [], [], [], []
        layer_net, layer_depth, stat_parts = [], [], []
        n_sets = n_layers = net0 = 0
        for ws in groups:
            self.check_arch(ws.arch, self.config.max_kernel)
            ws = ws.to(dev)                          # once: the statistics branch and the chunks read this copy
            N, L = len(ws), ws.arch.n_layers
            if self.config.statistics_branch:
                stat_parts.append(self._standardised_statistics(ws))
            slots: dict[int, int] = {}
            for p, info in zip(ws.params, ws.arch.layout):
                chunks, valid = chunk_tensor(p.to(dev, torch.float32), info, c)  # [N, m, c, e], [m]
                m, e = chunks.shape[1], chunks.shape[3]
                parts.setdefault(e, []).append((chunks.reshape(N * m, c, e), valid.to(dev).repeat(N),
                                                TYPE_CODE[(info.kind, info.role)], info.depth))
                # tensor-sets of this tensor are (net 0, net 1, ...); net n's chunks are contiguous
                chunk_set_parts.append((e, n_sets + torch.arange(N, device=dev).repeat_interleave(m)))
                set_len.append(torch.full((N,), m, device=dev))
                set_elems.append(torch.full((N,), info.numel // e, device=dev))
                set_depth.append(torch.full((N,), info.depth, device=dev))
                set_layer.append(n_layers + torch.arange(N, device=dev) * L + info.depth)
                set_slot.append(torch.full((N,), slots.get(info.depth, 0), device=dev))
                slots[info.depth] = slots.get(info.depth, 0) + 1
                n_sets += N
            layer_net.append(net0 + torch.arange(N, device=dev).repeat_interleave(L))  # layers net-major
            layer_depth.append(torch.arange(L, device=dev).repeat(N))
            n_layers += N * L
            net0 += N
        sources = dict(sorted(parts.items()))
        # chunk order everywhere below = sources in increasing e, parts in order within each e
        chunk_set = torch.cat([cs for e in sorted(parts) for ee, cs in chunk_set_parts if ee == e])
        set_stats, set_code = (torch.cat(x) for x in zip(*stat_parts)) if stat_parts else (None, None)
        return _Chunks(sources, chunk_set, torch.cat(set_len), torch.cat(set_elems), torch.cat(set_depth),
                       torch.cat(set_layer), torch.cat(set_slot), torch.cat(layer_net), torch.cat(layer_depth), net0,
                       set_code, set_stats)

    # ---- stages -------------------------------------------------------------------------------
    def _type_depth_enc(self, code: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """[n] codes, [n] depths -> [n, h]: type in the first half of the dims, depth in the second.
        (Summing two full-width sinusoids would make (type 1, depth 0) equal (type 0, depth 1).)
        Unscaled: the chunk encoder multiplies it by enc_scale, the statistics branch does not."""
        h = self.config.hidden
        return torch.cat([sinusoidal(code, h // 2), sinusoidal(depth, h - h // 2)], dim=1)

    def _encode_chunks(self, pieces: list, index: torch.Tensor) -> torch.Tensor:
        """Chunk encoder on one slice of pieces -> chunk vectors [n, h]. The slice is assembled here,
        inside the checkpoint, so only views of the weights are kept between forward and backward."""
        elements, valid, code, depth = _join(pieces)                          # [n, c, e], [n], [n], [n]
        emask = torch.arange(self.config.chunk_size, device=elements.device)[None] < valid[:, None]  # [n, c]
        elements = elements / self.input_scale[code][:, None, None]           # O(1) values, see __init__
        x = F.linear(elements, self.embed.weight[:, index], self.embed.bias)  # == embed(zero-padded to K*K)
        if self.embed_log is not None:                                        # log-magnitude channel, see SNEConfig
            log_mag = torch.sign(elements) * torch.log1p(elements.abs() / self.config.log_floor)
            x = x + F.linear(log_mag, self.embed_log.weight[:, index])
        # moment path (SNEConfig.moments): psi summed over the chunk's valid elements, read before any LayerNorm
        moment_sum = torch.einsum("nch,nc->nh", self.psi(x), emask.to(x.dtype)) if self.config.moments else x.new_zeros(0)
        x = self.phi1(x, emask)                                               # [n, c, h]
        x = x + self.enc_scale * self._type_depth_enc(code, depth)[:, None]
        x = self.phi2(x, emask)
        return self.pool_chunk(x, emask), moment_sum                          # [n, h], [n, h]

    def _encode_tensors(self, Z: torch.Tensor, start: torch.Tensor, length: torch.Tensor,
                        depth: torch.Tensor) -> torch.Tensor:
        """Layer encoder on one slice of tensor-sets: chunk vectors Z [n_chunks, h] -> [k, h]."""
        L = int(length.max())
        pos = torch.arange(L, device=Z.device)[None]                  # [1, L]
        mask = pos < length[:, None]                                  # [k, L]
        idx = torch.where(mask, start[:, None] + pos, start[:, None])  # padded slots read a valid row
        x = self.phi3(Z[idx], mask)                                   # [k, L, h]
        x = x + self.enc_scale * sinusoidal(depth, self.config.hidden)[:, None]
        return self.pool_tensor(x, mask)                              # [k, h]

    def _run(self, fn, n_slices: int, *args):
        # Checkpoint only when streaming: with one slice, recomputation would cost time and save nothing.
        if self.config.checkpoint and n_slices > 1 and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def encode(self, groups: list[WeightSet], tensor_codes: bool = False):
        """Network codes z [B, h], B = total networks over groups, in group order; with tensor_codes also
        the tensor vectors [n_tensors, h] in set order (group, then tensor of its layout, then network)."""
        cfg, h = self.config, self.config.hidden
        ch = self._chunk(groups)
        dev = self.embed.weight.device

        # 1-2. chunk encoder, streamed in slices of at most chunk_budget chunks -> Z [n_chunks, h]
        budget = cfg.chunk_budget
        # slices never mix element sizes; "streaming" means the chunks exceed the budget
        n_chunks = len(ch.chunk_set)
        n_slices = 1 if n_chunks <= budget else sum(-(-sum(len(p[0]) for p in ps) // budget) for ps in ch.sources.values())
        n_sets = len(ch.set_len)
        Z, start = [], 0
        M = self.embed.weight.new_zeros(n_sets, h) if cfg.moments else None   # [n_sets, h] sums of psi
        for e, ps in ch.sources.items():
            index = torch.tensor(_centre_index(math.isqrt(e), cfg.max_kernel), device=dev)
            for pieces in _slices(ps, budget):
                z_chunk, m_chunk = self._run(self._encode_chunks, n_slices, pieces, index)  # [n, h], [n, h]
                Z.append(z_chunk)
                if cfg.moments:   # into each tensor-set's sum at once: memory [n_sets, h], not [n_chunks, h]
                    # (index_put_ keeps only the index for backward; index_add_ would keep every slice's m_chunk)
                    M.index_put_((ch.chunk_set[start:start + len(z_chunk)],), m_chunk.to(M.dtype), accumulate=True)
                start += len(z_chunk)
        Z = torch.cat(Z)                                                # [n_chunks, h], source order
        # reorder chunks so each tensor-set's chunks are contiguous, sets in set order (stable sort)
        order = torch.sort(ch.chunk_set, stable=True).indices
        Z = Z[order]
        set_start = torch.cumsum(ch.set_len, 0) - ch.set_len            # [n_sets]

        # 3. layer encoder over each tensor's chunk vectors; sets sorted by length so a slice pads
        # little, each slice holding at most chunk_budget * chunk_size (padded) chunk vectors
        token_budget = budget * cfg.chunk_size
        by_len = torch.sort(ch.set_len, descending=True, stable=True).indices
        lens = ch.set_len[by_len].tolist()
        slices, i = [], 0
        while i < len(lens):
            k = max(1, min(len(lens) - i, token_budget // lens[i]))  # lens[i] is the slice's longest set
            slices.append(by_len[i:i + k])
            i += k
        T = torch.cat([self._run(self._encode_tensors, len(slices), Z, set_start[sel], ch.set_len[sel],
                                 ch.set_depth[sel]) for sel in slices])
        T = T[torch.argsort(by_len)]                                    # [n_sets, h], set order
        if cfg.moments:  # + each tensor's mean of psi over its valid elements (SNEConfig.moments)
            T = T + self.moment_proj(M.to(T.dtype) / ch.set_elems[:, None])

        # 3b. separated layer encoder: each layer's weight and bias vectors -> one layer vector
        n_layers, S = len(ch.layer_net), int(ch.set_slot.max()) + 1
        X = T.new_zeros(n_layers, S, h).index_put((ch.set_layer, ch.set_slot), T)  # [n_layers, S, h]
        mask = torch.zeros(n_layers, S, dtype=torch.bool, device=dev).index_put(
            (ch.set_layer, ch.set_slot), torch.ones_like(ch.set_slot, dtype=torch.bool))
        Lv = self.pool_layer(self.sep(X, mask), mask)                  # [n_layers, h]

        # 4. network encoder: + depth encoding, Φ4, PMA over each network's layers
        Lmax = int(ch.layer_depth.max()) + 1
        X = Lv.new_zeros(ch.n_nets, Lmax, h).index_put((ch.layer_net, ch.layer_depth),
                                                        Lv + self.enc_scale * sinusoidal(ch.layer_depth, h).to(Lv.dtype))
        mask = torch.zeros(ch.n_nets, Lmax, dtype=torch.bool, device=dev).index_put(
            (ch.layer_net, ch.layer_depth), torch.ones_like(ch.layer_depth, dtype=torch.bool))
        z = self.pool_net(self.phi4(X, mask), mask)                    # z [B, h]
        if cfg.statistics_branch:
            z = torch.cat([z, self._encode_statistics(ch)], dim=1)    # z [B, 2h]
        return (z, T) if tensor_codes else z

    def _encode_statistics(self, ch: _Chunks) -> torch.Tensor:
        """Statistics branch (SNEConfig.statistics_branch): one token per tensor, Φ5 and PMA per network -> [B, h]."""
        h, dev = self.config.hidden, self.embed.weight.device
        net, pos = ch.layer_net[ch.set_layer], ch.set_depth * 2 + ch.set_slot    # each tensor's network and place
        # type and depth encodings at full size, not enc_scale's: a token is 14 numbers, not one element of many, so
        # the encodings do not drown differences between networks here (and this is the measured form)
        tokens = self.stat_embed(ch.set_stats) + self._type_depth_enc(ch.set_code, ch.set_depth)
        P = int(pos.max()) + 1
        X = tokens.new_zeros(ch.n_nets, P, h).index_put((net, pos), tokens)          # [B, P, h]
        mask = torch.zeros(ch.n_nets, P, dtype=torch.bool, device=dev).index_put((net, pos), torch.ones_like(pos, dtype=torch.bool))
        return self.pool_stats(self.phi5(X, mask), mask)

    @property
    def code_dim(self) -> int:
        return self.config.hidden * (2 if self.config.statistics_branch else 1)

    def forward(self, groups: list[WeightSet], return_codes: bool = False):
        """Logits [B] of the predicted test accuracy (sigmoid -> prediction; BCE-with-logits loss); with
        return_codes (logits, network codes z [B, h], tensor vectors [n_tensors, h] in `encode`'s order),
        for the auxiliary heads of sne_core.aux_targets."""
        z, T = self.encode(groups, tensor_codes=True)
        logits = self.head(z).squeeze(-1)
        return (logits, z, T) if return_codes else logits
