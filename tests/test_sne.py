"""SNE encoder: masks, batch independence, mixed architectures, kernels, streaming, gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from sne_core.archs import Arch, ArchSpec, ParamInfo, get_arch, parse_spec, resolve
from sne_core.encoders import UnsupportedArchitecture
from sne_core.encoders.sne import SNE, SNEConfig, _centre_index
from sne_core.weights import WeightSet

TOL = dict(atol=2e-5, rtol=1e-4)
ARCH1, ARCH2 = get_arch("arch1"), get_arch("arch2")
# a larger, deeper user architecture: more chunks per tensor and more layers than Arch1/Arch2
BIG = resolve(parse_spec({"name": "big", "layers": [
    {"type": "conv", "out": 12, "kernel": 7}, {"type": "act"}, {"type": "maxpool", "kernel": 2},
    {"type": "conv", "out": 8, "kernel": 3, "stride": 2}, {"type": "act"}, {"type": "flatten"},
    {"type": "linear", "out": 24}, {"type": "act"}, {"type": "linear", "out": 16}, {"type": "act"},
    {"type": "linear", "out": 10}]}))


def nets(arch, n, seed):
    g = torch.Generator().manual_seed(seed)
    return WeightSet(arch, [torch.randn(n, *p.shape, generator=g) * 0.3 for p in arch.layout])


def model(**kw):
    torch.manual_seed(0)
    return SNE(SNEConfig(hidden=16, heads=2, head_widths=(16,), **kw)).eval()


# without input channels beyond the linear one, with the log-magnitude channel, with the moment path too, and with
# the statistics branch
CHANNELS = [dict(log_floor=0.0, moments=False), dict(log_floor=0.01, moments=False), dict(log_floor=0.01, moments=True),
            dict(statistics_branch=True)]


@pytest.mark.parametrize("channels", CHANNELS)
def test_code_of_a_network_does_not_depend_on_its_batch(channels):
    m = model(**channels)
    a1, a2, big = nets(ARCH1, 3, 1), nets(ARCH2, 2, 2), nets(BIG, 2, 3)
    with torch.no_grad():
        alone = m.encode([a1.subset([1])])                     # [1, h]
        same_arch = m.encode([a1])[1:2]                        # other Arch1 nets in the batch
        shuffled = m.encode([a1.subset([2, 1, 0])])[1:2]
        # with larger networks of other architectures: longer chunk sets and more layers -> padding
        mixed = m.encode([big, a1.subset([1]), a2])[2:3]
    assert alone.shape == (1, m.code_dim)
    for other in (same_arch, shuffled, mixed):
        assert torch.allclose(alone, other, **TOL), (alone - other).abs().max()


def test_mixed_batch_shapes_and_group_order():
    m = model()
    a1, a2 = nets(ARCH1, 4, 1), nets(ARCH2, 3, 2)
    with torch.no_grad():
        logits = m([a1, a2])
        parts = torch.cat([m([a1]), m([a2])])
    assert logits.shape == (7,) and torch.isfinite(logits).all()
    assert torch.allclose(logits, parts, **TOL)
    assert not torch.allclose(logits[:4].mean(), logits[4:].mean())  # it reads the weights


def test_every_kernel_size_1_to_7_is_read():
    spec = parse_spec({"name": "k1to7", "layers": [
        {"type": "conv", "out": 3, "kernel": k} for k in (7, 6, 5, 4, 3, 2, 1)] + [
        {"type": "gap"}, {"type": "linear", "out": 10}]})
    arch = resolve(spec)
    SNE.check_arch(arch)
    with torch.no_grad():
        z = model().encode([nets(arch, 2, 0)])
    assert z.shape == (2, 16) and torch.isfinite(z).all()


def test_kernel_larger_than_max_is_refused():
    # archs.resolve itself refuses kernels > 7, so build the (hypothetical) Arch by hand
    spec = ArchSpec("k9", ({"type": "conv", "out": 4, "kernel": 9}, {"type": "gap"}, {"type": "linear", "out": 10}))
    layout = (ParamInfo("0.weight", 0, "conv", "weight", (4, 1, 9, 9)), ParamInfo("0.bias", 0, "conv", "bias", (4,)),
              ParamInfo("2.weight", 1, "linear", "weight", (10, 4)), ParamInfo("2.bias", 1, "linear", "bias", (10,)))
    arch = Arch(spec, layout, ((4, 20, 20), (4,), (10,)))
    with pytest.raises(UnsupportedArchitecture, match="k9.*9x9"):
        SNE.check_arch(arch)
    with pytest.raises(UnsupportedArchitecture, match="arch2"):
        model(max_kernel=3)([nets(ARCH2, 1, 0)])     # an instance honours its own max_kernel
    SNE.check_arch(ARCH1), SNE.check_arch(ARCH2)   # the zoo architectures are accepted
    with pytest.raises(ValueError, match="no weight sets"):
        model()([])


def test_centre_embedding_equals_zero_padding_to_max_kernel():
    m = model()
    x = torch.randn(5, 9)                                   # five 3x3 kernels
    padded = F.pad(x.view(5, 3, 3), (2, 2, 2, 2)).reshape(5, 49)  # centred in 7x7
    idx = torch.tensor(_centre_index(3, 7))
    assert torch.allclose(m.embed(padded), F.linear(x, m.embed.weight[:, idx], m.embed.bias), atol=1e-6)
    assert _centre_index(1, 7) == [24] and len(_centre_index(2, 7)) == 4


def _loss_and_grads(m, groups):
    m.zero_grad()
    logits = m(groups)
    # (weights not summing to zero, so even the last bias gets a gradient)
    (logits * torch.linspace(0.5, 2.0, len(logits))).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("channels", CHANNELS)
def test_gradients_reach_every_parameter(channels):
    m = model(**channels).train()
    _, grads = _loss_and_grads(m, [nets(ARCH1, 3, 0), nets(ARCH2, 2, 1)])
    assert set(grads) == {n for n, _ in m.named_parameters()}
    dead = [n for n, g in grads.items() if not torch.isfinite(g).all() or g.abs().sum() == 0]
    assert not dead, dead


@pytest.mark.parametrize("channels", [{}, dict(moments=True), dict(statistics_branch=True)])
def test_streaming_gives_the_same_outputs_and_gradients(channels):
    groups = [nets(ARCH1, 3, 0), nets(BIG, 2, 1)]
    n_chunks = 2 * sum(math.ceil(p.numel / math.prod(p.shape[2:]) / 32) for p in BIG.layout)
    assert n_chunks > 10 * 16  # the small budget below really streams, in many slices
    full = model(chunk_budget=10**6, **channels)
    streamed = model(chunk_budget=16, **channels)  # 16 chunks per chunk-encoder slice, 512 vectors per layer slice
    l1, g1 = _loss_and_grads(full, groups)
    l2, g2 = _loss_and_grads(streamed, groups)
    assert torch.allclose(l1, l2, **TOL)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-3), n
    # and without checkpointing, too
    l3, g3 = _loss_and_grads(model(chunk_budget=3, checkpoint=False, **channels), groups)
    assert torch.allclose(l1, l3, **TOL)
    assert all(torch.allclose(g1[n], g3[n], atol=1e-5, rtol=1e-3) for n in g1)


def test_statistics_branch_standardises_each_slot_on_the_training_networks():
    m = model(statistics_branch=True)
    train = nets(ARCH1, 6, 0)
    m.prepare([train])
    assert m.code_dim == 32 and m.encode([train]).shape == (6, 32)
    # the branch's input: each tensor's exact statistics over its values, divided by the type's input scale
    raw, code, depth = m._statistics(train)                       # [8 tensors * 6 nets, 14], set order
    w = train.params[2][4].flatten()                              # tensor 2 (conv depth 1 weight) of network 4
    scale = m.input_scale[0]
    assert torch.allclose(raw[2 * 6 + 4, :7], torch.stack([w.mean(), w.std(correction=0), w.min(), w.quantile(0.25),
                                                             w.quantile(0.5), w.quantile(0.75), w.max()]) / scale, atol=1e-5)
    assert code[2 * 6 + 4] == 0 and depth[2 * 6 + 4] == 1
    # standardised per slot: each slot's statistics have mean 0 and std 1 over the training networks
    std_stats, _ = m._standardised_statistics(train)
    per_slot = std_stats.view(8, 6, 14)
    assert torch.allclose(per_slot.mean(1), torch.zeros(8, 14), atol=1e-4)
    assert torch.allclose(per_slot.std(1), torch.ones(8, 14), atol=1e-4)
    # Arch2's last layer (linear, depth 4) is a slot Arch1 lacks: standardised by the linear weights of every depth
    a2 = nets(ARCH2, 2, 1)
    raw2, _, _ = m._statistics(a2)
    std2, _ = m._standardised_statistics(a2)
    linear_w = raw[6 * 6:7 * 6]                                  # Arch1's only linear weight, the 6 networks
    fallback = (raw2[8 * 2:9 * 2] - linear_w.mean(0)) / linear_w.std(0)
    assert torch.allclose(std2[8 * 2:9 * 2], fallback, atol=1e-5)
    # while its conv slots (depths 0-2, also in Arch1) use Arch1's slots
    conv0 = raw[:6]
    assert torch.allclose(std2[:2], (raw2[:2] - conv0.mean(0)) / conv0.std(0), atol=1e-5)
