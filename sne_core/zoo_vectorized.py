"""The "vectorized" strategy: G networks of one architecture trained by one step.

Parameters are stacked along a leading group axis: one [G, n_params] tensor, viewed per layer as
[G, *shape] (`unflatten`). A conv layer
becomes one grouped convolution over the channel-concatenated inputs of all G networks, a linear
layer one batched matmul, so a step costs a handful of large kernels instead of G small ones.
Each network still sees its own images (its own subset and batch order), its own dropout masks,
activation, dropout rate, learning rate, L2 and optimizer (SGD/Adam/RMSprop written functionally
with the exact torch.optim update rules), so a network trains the same here as in the loop.

Activation layouts:  image stage [b, G*C, H, W] (network g owns channels g*C .. g*C+C-1),
                     flat stage  [G, b, F] (after gap/flatten; bmm-friendly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sne_core.archs import Arch
from sne_core.hparams import HParams
from sne_core.records import Checkpoint, NetworkResult
from sne_core.zoo_network import (EVAL_IMAGES_PER_CHUNK, RunSpec, TrainData, autocast,
                                  diverged_result, dropout_draw, dropout_multiplier, epoch_order, generators, init_state, kernel_names,
                                  subset_size, train_subset)

OPTIMIZER_CODE = {"sgd": 0, "adam": 1, "rmsprop": 2}
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8      # torch.optim.Adam defaults
RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8        # torch.optim.RMSprop defaults


class Group:
    """Per-network settings of the networks currently in the group, as [G] tensors."""

    def __init__(self, hps: list[HParams], device: torch.device):
        self.hps = hps
        self.lr = torch.tensor([h.lr for h in hps], device=device)
        self.l2 = torch.tensor([h.l2 for h in hps], device=device)
        self.opt = torch.tensor([OPTIMIZER_CODE[h.optimizer] for h in hps], device=device)
        self.relu = torch.tensor([h.activation == "relu" for h in hps], device=device)
        self.p = torch.tensor([h.dropout for h in hps], device=device)
        self.scale = torch.tensor([1.0 / (1.0 - h.dropout) for h in hps], device=device)

    def rows(self, start: int, stop: int) -> "Group":
        """Networks start .. stop-1 (views, no copies)."""
        sub = object.__new__(Group)
        sub.hps = self.hps[start:stop]
        for name in ("lr", "l2", "opt", "relu", "p", "scale"):
            setattr(sub, name, getattr(self, name)[start:stop])
        return sub

    def select(self, keep: torch.Tensor) -> None:
        self.hps = [self.hps[i] for i in keep.tolist()]
        for name in ("lr", "l2", "opt", "relu", "p", "scale"):
            setattr(self, name, getattr(self, name)[keep])


def _pad_rows(t: torch.Tensor, b: int) -> torch.Tensor:
    return t if t.shape[0] == b else torch.cat([t, t.new_zeros((b - t.shape[0], *t.shape[1:]))])


def _per_network(v: torch.Tensor, h: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Broadcast a [G] vector against activations h in either layout."""
    if channels is not None:                                   # image stage [b, G*C, H, W]
        return v.repeat_interleave(channels).view(1, -1, *([1] * (h.dim() - 2)))
    return v.view(-1, *([1] * (h.dim() - 1)))                  # flat stage [G, b, F]


def group_forward(arch: Arch, params: dict[str, torch.Tensor], x: torch.Tensor, grp: Group,
                  g_drops: list[torch.Generator] | None = None, lens: list[int] | None = None) -> torch.Tensor:
    """x [b, G*C_in, H, W] -> logits [G, b, K]. `g_drops` None = eval (no dropout). lens[g] = network g's
    real images in this batch (the rest is padding): its dropout draw has exactly that many rows, so
    its random stream is consumed as in the per-network loop."""
    G, b = len(grp.hps), x.shape[0]
    h, channels = x, arch.spec.in_channels                    # channels is None once flat
    for i, layer in enumerate(arch.spec.layers):
        t = layer["type"]
        if t == "conv":
            w, bias = params[f"{i}.weight"], params[f"{i}.bias"]   # [G, O, C, k, k], [G, O]
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), layer.get("stride", 1),
                         layer.get("padding", 0), groups=G)       # [b, G*O, H', W']
            channels = w.shape[1]
        elif t == "linear":
            w, bias = params[f"{i}.weight"], params[f"{i}.bias"]   # [G, O, F], [G, O]
            h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))   # [G, b, O]
        elif t == "act":
            kinds = {hp.activation for hp in grp.hps}            # host-side: no device sync
            if kinds == {"relu"}:
                h = torch.relu(h)
            elif kinds == {"tanh"}:
                h = torch.tanh(h)
            else:
                h = torch.where(_per_network(grp.relu, h, channels), torch.relu(h), torch.tanh(h))
        elif t == "dropout" and g_drops is not None:
            rows = lens or [b] * G
            if channels is not None:                           # each network draws [b_g, C, H, W] like the loop
                feat = (h.shape[1] // G, *h.shape[2:])
                u = torch.stack([_pad_rows(dropout_draw((rows[g], *feat), g_drops[g], h.device), b)
                                 for g in range(G)], 1).view_as(h)
            else:                                              # each network draws [b_g, F]
                u = torch.stack([_pad_rows(dropout_draw((rows[g], h.shape[2]), g_drops[g], h.device), b)
                                 for g in range(G)])
            h = h * dropout_multiplier(u, _per_network(grp.p, h, channels), _per_network(grp.scale, h, channels))
        elif t == "maxpool":
            h = F.max_pool2d(h, layer["kernel"], layer.get("stride", layer["kernel"]))
        elif t == "avgpool":
            h = F.avg_pool2d(h, layer["kernel"], layer.get("stride", layer["kernel"]))
        elif t == "gap":
            h = h.mean((2, 3)).view(b, G, channels).transpose(0, 1)            # [G, b, C]
            channels = None
        elif t == "flatten":
            h = h.reshape(b, G, -1).transpose(0, 1)                            # [G, b, C*H*W]
            channels = None
    return h


def _stack_images(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W], idx [G, b] -> [b, G*C, H, W] (network g's images in its channel block)."""
    G, b = idx.shape
    return x[idx].transpose(0, 1).reshape(b, G * x.shape[1], *x.shape[2:])


@torch.no_grad()
def optimizer_step(params, grads, state, grp: Group, step: torch.Tensor, alive: torch.Tensor) -> None:
    """SGD / Adam / RMSprop per network, as torch.optim computes them; dead networks stay frozen.
    step [G]: each network's optimizer step count (after this step), for Adam's bias correction."""
    b1, b2 = ADAM_BETAS
    bc1, bc2_sqrt = 1 - b1 ** step, (1 - b2 ** step) ** 0.5                 # [G]
    for name, p in params.items():
        g = grads[name]
        m, v, sq = state[name]
        view = (-1,) + (1,) * (p.dim() - 1)
        lr, code = grp.lr.view(view), grp.opt.view(view)
        bc1_g, bc2_sqrt_g = bc1.view(view), bc2_sqrt.view(view)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        sq.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
        adam = (lr / bc1_g) * m / (v.sqrt() / bc2_sqrt_g + ADAM_EPS)
        rms = lr * g / (sq.sqrt() + RMSPROP_EPS)
        update = torch.where(code == 0, lr * g, torch.where(code == 1, adam, rms))
        p.copy_(torch.where(alive.view(view), p - update, p))


# Networks per evaluation forward. On CPU one: a grouped convolution over a few thousand
# images was ~3x slower than G plain ones (2,000 MNIST images, 4 Arch1 networks, 2 threads), and a
# group mixing relu and tanh computes both over activations far larger than the cache. Measured: 4
# networks, 2 epochs over 4,000 images with 3 checkpoints, spent 1.8 of their 2.6 s evaluating
# (0.5 s one at a time). On CUDA the whole group at once.
EVAL_GROUP = {"cpu": 1}


@torch.inference_mode()
def _evaluate(arch, params, grp, x_all, y_all, idx, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-network (accuracy [G], mean CE [G]) on images idx [G, n] (-1 = padding), or on all of
    x_all shared by every network when idx is None."""
    G = len(grp.hps)
    step = EVAL_GROUP.get(x_all.device.type, G)
    parts = [_evaluate_rows(arch, {k: v[a:a + step] for k, v in params.items()}, grp.rows(a, a + step),
                            x_all, y_all, None if idx is None else idx[a:a + step], amp) for a in range(0, G, step)]
    return torch.cat([acc for acc, _ in parts]), torch.cat([loss for _, loss in parts])


def _evaluate_rows(arch, params, grp, x_all, y_all, idx, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """`_evaluate` for one sub-group, in chunks of at most EVAL_IMAGES_PER_CHUNK images x networks."""
    G = len(grp.hps)
    n = x_all.shape[0] if idx is None else idx.shape[1]
    chunk = max(1, EVAL_IMAGES_PER_CHUNK // G)
    correct = torch.zeros(G, device=x_all.device)
    loss = torch.zeros(G, device=x_all.device)
    for s in range(0, n, chunk):
        if idx is None:
            xb = x_all[s:s + chunk]
            x, y, real = xb.repeat(1, G, 1, 1), y_all[s:s + chunk].expand(G, -1), None
        else:
            part = idx[:, s:s + chunk]
            real = part >= 0
            x, y = _stack_images(x_all, part.clamp(min=0)), y_all[part.clamp(min=0)]
        with autocast(x.device, amp):
            logits = group_forward(arch, params, x, grp)               # [G, b, K]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape)
        hit = (logits.argmax(2) == y).float()
        if real is not None:
            ce, hit = ce * real, hit * real
        loss += ce.sum(1)
        correct += hit.sum(1)
    count = torch.full((G,), float(n), device=x_all.device) if idx is None else (idx >= 0).sum(1).float()
    return correct / count, loss / count


def unflatten(arch: Arch, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """flat [G, n_params] -> {name: view [G, *shape]} in layout order (views share flat's storage)."""
    out, o = {}, 0
    for p in arch.layout:
        out[p.name] = flat[:, o:o + p.numel].view(flat.shape[0], *p.shape)
        o += p.numel
    return out


def _padded_orders(orders: list[torch.Tensor], batch_size: int, steps: int) -> torch.Tensor:
    """Per-network epoch orders -> [G, steps*batch_size], -1 past each network's end (short last batch)."""
    out = torch.full((len(orders), steps * batch_size), -1, dtype=torch.long)
    for g, o in enumerate(orders):
        out[g, :len(o)] = o
    return out


def train_group(arch: Arch, hps: list[HParams], data: TrainData, run: RunSpec,
                max_steps: int | None = None) -> list[NetworkResult]:
    """Train a group of networks together; see the module doc. Networks with smaller training
    subsets finish their epoch in fewer steps: the group is ordered by subset size (largest
    first), so the networks still active at step s are a prefix and a step computes only those
    (parameter views, no copies). A short last batch is padded and masked out of the loss."""
    device = data.train_x.device
    n_train = len(data.train_x)
    hps = sorted(hps, key=lambda h: (-subset_size(h, n_train), h.model_id))
    gens = [generators(h, device) for h in hps]
    states = [init_state(arch, h, g[0]) for h, g in zip(hps, gens)]
    # all of a network's parameters in one row: the optimizer is a dozen ops per step, not a dozen per tensor
    flat = torch.cat([torch.stack([s[p.name] for s in states]).flatten(1) for p in arch.layout], 1)
    flat = flat.to(device).requires_grad_()                                             # [G, n_params]
    opt_state = [torch.zeros_like(flat) for _ in range(3)]                               # adam m, v; rmsprop sq
    steps_done = torch.zeros(len(hps), device=device)                                   # per-network optimizer step
    subsets = [train_subset(h, n_train, g[1]) for h, g in zip(hps, gens)]
    results = {h.model_id: NetworkResult(h) for h in hps}
    grp = Group(hps, device)
    kernels = kernel_names(arch)
    B = run.batch_size

    def checkpoint(epoch: int) -> None:
        eval_sets = [s[:run.eval_train_images] for s in subsets]     # each network's own images, own count
        eval_idx = _padded_orders(eval_sets, max(len(e) for e in eval_sets), 1).to(device)
        params = unflatten(arch, flat.detach())
        tr_acc, tr_loss = _evaluate(arch, params, grp, data.train_x, data.train_y, eval_idx, run.amp)
        te_acc, te_loss = _evaluate(arch, params, grp, data.test_x, data.test_y, None, run.amp)
        host = unflatten(arch, flat.detach().float().cpu())
        for g, h in enumerate(grp.hps):
            state = {k: v[g].clone() for k, v in host.items()}
            results[h.model_id].checkpoints.append(Checkpoint(epoch, float(tr_acc[g]), float(tr_loss[g]),
                                                              float(te_acc[g]), float(te_loss[g]), state))

    if 0 in run.checkpoint_epochs and max_steps is None:
        checkpoint(0)
    total_steps = 0
    for epoch in range(1, run.epochs + 1):
        sizes = [len(s) for s in subsets]                                           # non-increasing
        steps = [-(-n // B) for n in sizes]
        orders = _padded_orders([epoch_order(s, g[1]) for s, g in zip(subsets, gens)], B, steps[0]).to(device)
        alive = torch.ones(len(grp.hps), dtype=torch.bool, device=device)
        for s in range(steps[0]):
            k = sum(st > s for st in steps)                                         # active prefix
            lens = [min(B, n - s * B) for n in sizes[:k]]                           # real images per network
            b = max(lens)
            idx = orders[:k, s * B:s * B + b]                                       # [k, b], -1 = padding
            real = idx >= 0
            idx = idx.clamp(min=0)
            sub, flat_k = grp.rows(0, k), flat[:k]
            p_k = unflatten(arch, flat_k)
            with autocast(device, run.amp):
                logits = group_forward(arch, p_k, _stack_images(data.train_x, idx), sub, [g[2] for g in gens[:k]], lens)
            ce = F.cross_entropy(logits.flatten(0, 1).float(), data.train_y[idx].flatten(), reduction="none").view(k, b)
            ce = (ce * real).sum(1) / torch.tensor(lens, device=device)             # [k] batch-mean CE
            loss = ce + sub.l2 * sum(p_k[n].pow(2).flatten(1).sum(1) for n in kernels)
            # a network whose loss is NaN/Inf stops before this step; no host sync needed here
            alive[:k] &= torch.isfinite(loss)
            grad, = torch.autograd.grad(loss.sum(), flat_k)
            steps_done[:k] += 1
            optimizer_step({"flat": flat_k}, {"flat": grad}, {"flat": [t[:k] for t in opt_state]},
                           sub, steps_done[:k], alive[:k])
            total_steps += 1
            if max_steps is not None and total_steps >= max_steps:
                return [results[h.model_id] for h in sorted(hps, key=lambda h: h.model_id)]
        alive &= torch.isfinite(flat.detach()).all(1)                              # weights gone non-finite
        if not bool(alive.all()):           # record the diverged and drop them from the group
            keep = alive.nonzero().flatten().cpu()
            for g in (~alive).nonzero().flatten().tolist():
                diverged_result(results[grp.hps[g].model_id], epoch)
            grp.select(keep)
            gens = [gens[i] for i in keep.tolist()]
            subsets = [subsets[i] for i in keep.tolist()]
            flat = flat.detach()[keep.to(device)].requires_grad_()
            opt_state = [t[keep.to(device)] for t in opt_state]
            steps_done = steps_done[keep.to(device)]
            if not grp.hps:
                break
        if epoch in run.checkpoint_epochs:
            checkpoint(epoch)
    return [results[h.model_id] for h in sorted(hps, key=lambda h: h.model_id)]
