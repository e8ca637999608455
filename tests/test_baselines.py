"""Baselines (SPEC §5): each one learns on a tiny synthetic zoo, and refuses what it cannot read.

Synthetic zoo: random Arch1/Arch2 weights where each network has a hidden "quality" z that shifts
all its weights by 0.1 * z, on top of per-tensor noise of random scale; its target accuracy is
sigmoid(1.5 z). Every baseline can see the shift (flat coordinates, set means, tensor means, NFN's
invariant pools), none can see z directly, and a predictor that learns nothing gets tau ~ 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sne_core.archs import Arch, ParamInfo, get_arch, parse_spec, resolve
from sne_core.baselines import (BASELINES, DeepSetsPredictor, GBMPredictor, MLPPredictor, NFNHNPPredictor,
                                NFNNPPredictor, StatNNPredictor, UnsupportedArchitecture, tensor_statistics)
from sne_core.metrics import kendall_tau
from sne_core.train import TrainConfig, ZooData, fit, predict
from sne_core.weights import WeightSet

ARCH1, ARCH2 = get_arch("arch1"), get_arch("arch2")


def synthetic_zoo(arch: Arch, n: int, seed: int) -> ZooData:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g)
    params = []
    for p in arch.layout:
        scale = torch.exp(torch.empty(n).uniform_(np.log(0.05), np.log(0.5), generator=g))  # nuisance
        noise = torch.randn(n, *p.shape, generator=g) * scale.view(-1, *[1] * len(p.shape))
        params.append(noise + 0.1 * z.view(-1, *[1] * len(p.shape)))
    return ZooData([WeightSet(arch, params)], torch.sigmoid(1.5 * z), np.arange(n), zoo=f"synthetic/{arch.name}")


@pytest.fixture(scope="module")
def zoo1():
    return synthetic_zoo(ARCH1, 96, 0), synthetic_zoo(ARCH1, 32, 1), synthetic_zoo(ARCH1, 64, 2)


# Small widths and few epochs keep the file near a minute on 2 shared CPU cores; the NFNs still
# run the real nfn layers, only narrower than their defaults. GBM on 1 thread: OpenMP workers
# spinning on an oversubscribed CPU were >10x slower.
TRAIN = {
    "mlp": dict(epochs=10),
    "deepsets": dict(epochs=6, lr=3e-3, hyper={"width": 16}),
    "statnn": dict(epochs=10),
    "nfn_np": dict(epochs=4, hyper={"hchannels": (4, 4), "head_hidden": 64}),
    "nfn_hnp": dict(epochs=4, hyper={"hchannels": (4, 4), "head_hidden": 64}),
    "gbm": dict(hyper={"max_rounds": 200, "n_threads": 1}),
}


@pytest.mark.parametrize("method", sorted(TRAIN))
def test_baseline_learns(method, zoo1):
    train, val, test = zoo1
    cfg = TrainConfig(method=method, batch_size=32, patience=100, device="cpu", seed=0, **TRAIN[method])
    result = fit(cfg, train, val)
    tau = kendall_tau(predict(result.model, test), test.y.numpy())
    assert tau > 0.5, f"{method}: held-out Kendall tau {tau:.3f} (expected > 0.5)"


def test_mlp_refuses_other_layout():
    m = MLPPredictor([ARCH1])
    with pytest.raises(UnsupportedArchitecture, match=r"built for 'arch1'.*cannot read 'arch2'"):
        m.check_arch(ARCH2)
    w2 = synthetic_zoo(ARCH2, 4, 0).groups
    with pytest.raises(UnsupportedArchitecture, match="arch2"):
        m(w2)


DEEP = parse_spec({"name": "deep9", "layers": [{"type": "conv", "out": 4, "kernel": 3, "padding": 1}] * 9
                   + [{"type": "gap"}, {"type": "linear", "out": 10}]})


@pytest.mark.parametrize("cls", [StatNNPredictor, GBMPredictor])
def test_statistics_refuse_too_many_tensors(cls):
    deep = resolve(DEEP)                                             # 10 layers = 20 tensors > 16
    with pytest.raises(UnsupportedArchitecture, match=r"max_tensors=16.*'deep9' has 20"):
        cls.check_arch(deep)
    with pytest.raises(UnsupportedArchitecture, match="max_tensors=16"):
        cls([deep])
    cls([deep], max_tensors=20).check_arch(deep)                     # configurable, then accepted
    with pytest.raises(UnsupportedArchitecture, match="max_tensors=6"):
        cls([ARCH2], max_tensors=6)


def test_tensor_statistics_values():
    ws = synthetic_zoo(ARCH1, 3, 0).groups[0]
    s = tensor_statistics(ws, 16).view(3, 16, 7)
    w = ws.params[2][1].flatten()
    expect = torch.stack([w.mean(), w.var(correction=0), w.min(), w.quantile(0.25), w.quantile(0.5), w.quantile(0.75),
                          w.max()])
    torch.testing.assert_close(s[1, 2], expect)
    assert (s[:, len(ARCH1.layout):] == 0).all()                    # missing tensors zero-padded


@pytest.mark.parametrize("cls", [NFNNPPredictor, NFNHNPPredictor])
def test_nfn_refuses_flatten_linear(cls):
    with pytest.raises(UnsupportedArchitecture,
                       match="NFN needs a global average pool before the first linear layer; arch2 uses flatten -> linear"):
        cls.check_arch(ARCH2)
    with pytest.raises(UnsupportedArchitecture, match="flatten -> linear"):
        cls([ARCH2])
    m = cls([ARCH1])
    with pytest.raises(UnsupportedArchitecture, match="flatten -> linear"):
        m(synthetic_zoo(ARCH2, 2, 0).groups)


def test_nfn_is_permutation_invariant():
    """The real nfn layers: permuting conv1's output channels (and conv2's inputs) leaves the output unchanged."""
    ws = synthetic_zoo(ARCH1, 4, 0).groups[0]
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    p = list(ws.params)
    p[0], p[1], p[2] = p[0][:, perm], p[1][:, perm], p[2][:, :, perm]
    permuted = WeightSet(ARCH1, p)
    for cls in (NFNHNPPredictor, NFNNPPredictor):
        torch.manual_seed(0)
        m = cls([ARCH1], hchannels=(8, 4), head_hidden=64, normalize=False).eval()
        with torch.no_grad():
            torch.testing.assert_close(m([ws]), m([permuted]), rtol=1e-4, atol=1e-4)


def test_deepsets_refuses_unknown_layer_kind():
    norm = ParamInfo("1.weight", 1, "batchnorm", "weight", (16,))
    odd = Arch(ARCH1.spec, (ARCH1.layout[0], ARCH1.layout[1], norm), ARCH1.shapes)
    with pytest.raises(UnsupportedArchitecture, match="batchnorm.weight"):
        DeepSetsPredictor.check_arch(odd)


@pytest.mark.parametrize("cls", [DeepSetsPredictor, StatNNPredictor])
def test_mixed_architecture_batch(cls):
    """Architecture-agnostic predictors read Arch1 and Arch2 networks in one batch, in group order,
    and a network's output does not depend on what else is in the batch (padding is masked)."""
    torch.manual_seed(0)
    a, b = synthetic_zoo(ARCH1, 5, 0).groups[0], synthetic_zoo(ARCH2, 3, 1).groups[0]
    m = cls([ARCH1])
    m.prepare([a])
    m.eval()
    with torch.no_grad():
        mixed = m([a, b])
        assert mixed.shape == (8,) and torch.isfinite(mixed).all()
        torch.testing.assert_close(mixed[:5], m([a]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mixed[5:], m([b]), rtol=1e-5, atol=1e-5)


def test_gbm_selects_rounds_on_validation_only(zoo1):
    train, val, _ = zoo1
    g = GBMPredictor([ARCH1], max_rounds=60, n_threads=1).fit(train.groups, train.y, val.groups, val.y, seed=0)
    assert g.val_mse_.shape == (60,) and g.n_rounds_ == int(np.argmin(g.val_mse_)) + 1
    assert g.model.n_iter_ == g.n_rounds_
    # the refit reproduces the chosen stage of the full run exactly
    raw = g.model.predict(g.features(val.groups))                    # before clipping to [0, 1]
    assert np.isclose(np.mean((raw - val.y.numpy()) ** 2), g.val_mse_[g.n_rounds_ - 1], rtol=1e-9)
    pred = g.predict(val.groups)
    assert pred.shape == (32,) and pred.min() >= 0 and pred.max() <= 1
    with pytest.raises(ValueError, match="y_val has 3 targets for 32 networks"):
        GBMPredictor([ARCH1]).fit(train.groups, train.y, val.groups, val.y[:3])


def test_registry_names():
    assert set(BASELINES) == {"mlp", "deepsets", "statnn", "gbm", "nfn_np", "nfn_hnp"}
