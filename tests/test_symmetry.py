"""Hidden-unit permutations preserve each network's function; the invariance penalty works."""
import pytest
import torch
import torch.nn.functional as F

from sne_core.archs import build_model, get_arch, parse_spec, resolve
from sne_core.symmetry import invariance_penalty, permute_hidden
from sne_core.weights import WeightSet

CUSTOM = resolve(parse_spec({"name": "pool_flatten", "layers": [
    {"type": "conv", "out": 6, "kernel": 5, "stride": 2}, {"type": "act"}, {"type": "avgpool", "kernel": 2},
    {"type": "dropout"}, {"type": "conv", "out": 5, "kernel": 3}, {"type": "act"}, {"type": "flatten"},
    {"type": "linear", "out": 12}, {"type": "act"}, {"type": "linear", "out": 7}, {"type": "act"},
    {"type": "linear", "out": 10}]}))


@pytest.fixture(scope="module")
def images():
    """Real inputs: 64 scikit-learn digits, 8x8 upsampled to 1x28x28 in [-1, 1]."""
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().images[:64], dtype=torch.float32)[:, None] / 8.0 - 1.0
    return F.interpolate(x, size=28, mode="bilinear", align_corners=False)


def nets(arch, n, seed):
    g = torch.Generator().manual_seed(seed)
    return WeightSet(arch, [torch.randn(n, *p.shape, generator=g) * (2.0 / max(1, p.numel // p.shape[0])) ** 0.5
                            for p in arch.layout])


def logits(ws, i, x, activation):
    model = build_model(ws.arch, activation).eval()
    model.load_state_dict(ws.state_dict(i))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("arch", [get_arch("arch1"), get_arch("arch2"), CUSTOM], ids=lambda a: a.name)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_permutation_preserves_the_function(arch, activation, images):
    ws = nets(arch, 3, 0)
    pws = permute_hidden(ws, torch.Generator().manual_seed(1))
    for i in range(len(ws)):
        a, b = logits(ws, i, images, activation), logits(pws, i, images, activation)
        assert a.abs().max() > 1e-3  # the networks compute something
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
    # the weights did change: every hidden layer's weight, and the last layer's input columns
    for info, p, q in zip(arch.layout, ws.params, pws.params):
        if info.role == "weight":
            assert not torch.equal(p, q), info.name
    # the last layer's outputs (the logits' order) are never permuted
    assert torch.equal(ws.params[-1], pws.params[-1])
    # each network draws its own permutation
    first = [info.role for info in arch.layout].index("bias")
    moved = torch.stack([(pws.params[first][i] != ws.params[first][i]) for i in range(3)])
    assert not torch.equal(moved[0], moved[1]) or not torch.equal(moved[1], moved[2])


def test_a_broken_permutation_is_caught(images):
    """Control: permuting only a layer's outputs (not the next inputs) does change the function,
    so the test above can fail."""
    arch = get_arch("arch2")
    ws = nets(arch, 1, 0)
    bad = [p.clone() for p in ws.params]
    perm = torch.randperm(bad[0].shape[1])
    bad[0], bad[1] = bad[0][:, perm], bad[1][:, perm]
    assert not torch.allclose(logits(ws, 0, images, "relu"), logits(WeightSet(arch, bad), 0, images, "relu"), atol=1e-3)


def test_permutation_is_seeded():
    ws = nets(get_arch("arch1"), 2, 0)
    a = permute_hidden(ws, torch.Generator().manual_seed(5))
    b = permute_hidden(ws, torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a.params, b.params))


def test_invariance_penalty_is_zero_for_an_invariant_model_and_positive_otherwise():
    groups = [nets(get_arch("arch1"), 4, 0), nets(get_arch("arch2"), 3, 1)]

    class SumOfWeights(torch.nn.Module):  # permutation invariant by construction
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, groups):
            return torch.cat([self.scale * ws.flat().sum(1) for ws in groups])

    class FirstWeight(SumOfWeights):  # reads one weight's position: not invariant
        def forward(self, groups):
            return torch.cat([self.scale * ws.params[0].reshape(len(ws), -1)[:, 0] for ws in groups])

    g = torch.Generator().manual_seed(0)
    inv = SumOfWeights()
    assert invariance_penalty(inv, groups, inv(groups), g).item() < 1e-8
    fw = FirstWeight()
    pen = invariance_penalty(fw, groups, fw(groups), g)
    assert pen.item() > 1e-4
    pen.backward()
    assert fw.scale.grad.abs() > 0


def test_invariance_penalty_with_sne():
    from sne_core.encoders.sne import SNE, SNEConfig
    torch.manual_seed(0)
    m = SNE(SNEConfig(hidden=16, heads=2, head_widths=(16,)))
    groups = [nets(get_arch("arch1"), 2, 0), nets(get_arch("arch2"), 2, 1)]
    pen = invariance_penalty(m, groups, m(groups), torch.Generator().manual_seed(0))
    assert pen.ndim == 0 and torch.isfinite(pen) and pen.item() > 0  # SNE is not invariant by construction
    pen.backward()
    assert m.embed.weight.grad is not None
