"""Auxiliary targets: read from the models table in the ZooData's order, kept aligned through subsets,
trained by a second head on SNE's code that fit never returns, and refused where they cannot apply."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sne_core.aux_targets import (CLASSES, REGRESSION, STAT_FLOOR, TARGETS, AuxHead, aux_targets,
                                  statistic_targets)
from sne_core.baselines.statnn import N_STATS, tensor_statistics
from sne_core.hparams import INITS, OPTIMIZERS
from sne_core.protocols import load_zoo
from sne_core.store import ZooStore
from sne_core.train import TrainConfig, ZooData, fit, predict
from test_splits import write_synthetic_zoo

SNE_SMALL = {"hidden": 16, "heads": 2, "head_widths": [16]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = ZooStore(tmp_path_factory.mktemp("aux") / "store")
    write_synthetic_zoo(s, "mnist", "arch1", 40)
    write_synthetic_zoo(s, "mnist", "arch2", 12)
    return s


def test_targets_follow_the_models_table_row_by_row(store):
    train = load_zoo(store, "mnist/arch1", "train")
    models = store.read_models("mnist", "arch1").query("is_final").set_index("model_id").loc[train.model_ids]
    assert train.aux.shape == (len(train), len(TARGETS))
    col = {name: train.aux[:, i].numpy() for i, name in enumerate(TARGETS)}
    np.testing.assert_allclose(col["log_lr"], np.log(models.lr), rtol=1e-6)
    np.testing.assert_allclose(col["dropout"], models.dropout, rtol=1e-6)
    np.testing.assert_allclose(col["train_acc"], models.train_acc, rtol=1e-6)
    assert [OPTIMIZERS[int(i)] for i in col["optimizer"]] == list(models.optimizer)
    assert [INITS[int(i)] for i in col["init"]] == list(models["init"])
    # init_std is a target only where the init uses it
    std_based = models["init"].isin(["normal", "truncated_normal"]).to_numpy()
    assert np.isnan(col["log_init_std"][~std_based]).all() and np.isfinite(col["log_init_std"][std_based]).all()
    assert len(TARGETS) == len(REGRESSION) + len(CLASSES)


def test_subset_keeps_targets_aligned(store):
    train = load_zoo(store, "mnist/arch1", "train")
    part = train.subset(torch.tensor([5, 0, 3]))
    assert list(part.model_ids) == list(train.model_ids[[0, 3, 5]])
    torch.testing.assert_close(part.aux, train.aux[[0, 3, 5]], equal_nan=True)
    torch.testing.assert_close(part.y, train.y[[0, 3, 5]])


def test_bad_targets_are_refused(store):
    train = load_zoo(store, "mnist/arch1", "train")
    with pytest.raises(ValueError, match=r"zoo 'x': auxiliary targets have shape \(16, 3\), expected \(16, 11\)"):
        ZooData(train.groups, train.y, train.model_ids, zoo="x", aux=torch.zeros(len(train), 3))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['dropout'\]"):
        aux_targets(store.read_models("mnist", "arch1").drop(columns="dropout"))


def test_statistics_targets_are_statnns_compressed_with_empty_slots_undefined(store):
    a1, a2 = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch2", "train")
    groups = a1.groups + a2.groups                             # Arch1 (8 tensors) then Arch2 (10)
    stats = statistic_targets(groups).view(len(a1) + len(a2), -1, N_STATS)
    assert stats.shape[1] == 10                                # as wide as the deepest architecture
    for ws, rows in ((a1.groups[0], stats[:len(a1)]), (a2.groups[0], stats[len(a1):])):
        n = len(ws.arch.layout)
        raw = tensor_statistics(ws, n).view(len(ws), n, N_STATS)
        torch.testing.assert_close(rows[:, :n], torch.sign(raw) * torch.log1p(raw.abs() / STAT_FLOOR))
        assert torch.isnan(rows[:, n:]).all() and rows[:, n:].numel() == len(ws) * (10 - n) * N_STATS
    assert statistic_targets(a1.groups).shape == (len(a1), 8 * N_STATS)   # Arch1 alone: no empty slots


def test_head_loss_ignores_undefined_targets_and_standardises():
    torch.manual_seed(0)
    head = AuxHead(4, n_stats=112)
    records = torch.randn(6, len(TARGETS)) * 10 + 3
    records[:, len(REGRESSION):] = torch.tensor([0.0, 1.0, 1.0])         # valid class indices
    stats = torch.randn(6, 112) * 5 - 2
    stats[:, 80:] = float("nan")
    head.fit_scale(records, stats)
    reg = (records[:, :len(REGRESSION)] - head.reg_mean) / head.reg_std
    torch.testing.assert_close(reg.mean(0), torch.zeros(len(REGRESSION)), atol=1e-5, rtol=0)
    torch.testing.assert_close(((stats[:, :80] - head.stat_mean[:80]) / head.stat_std[:80]).std(0, correction=0),
                               torch.ones(80), atol=1e-4, rtol=0)
    z = torch.randn(6, 4)
    head.eval()
    rec, stat = head.loss(z, records, stats)
    assert rec > 0 and stat > 0 and torch.isfinite(stat)
    holed = records.clone()
    holed[0, 0] = float("nan")                      # one undefined value changes only that target's mean
    assert torch.isfinite(head.loss(z, holed, None)[0]) and head.loss(z, holed, None)[0] != rec
    assert head.loss(z, None, None) == (0, 0)       # kinds not asked for cost nothing
    assert head.loss(z, torch.full_like(records, float("nan")), None)[0] == 0


def test_sne_learns_the_targets_and_fit_returns_the_plain_predictor(store):
    train, val = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch1", "val")
    config = TrainConfig(method="sne", epochs=6, batch_size=8, lr=3e-3, patience=50, device="cpu", amp="none",
                         invariance_weight=0.0, aux_weight=1.0, stats_weight=1.0, hyper=SNE_SMALL)
    result = fit(config, train, val)
    for kind in ("aux", "stats"):
        losses = [h[f"train_{kind}"] for h in result.history]
        assert all(math.isfinite(a) and a > 0 for a in losses) and losses[-1] < losses[0], kind
    assert not any("aux" in k for k in result.model.state_dict())    # the head stays behind
    assert predict(result.model, val).shape == (len(val),)
    plain = fit(TrainConfig(**{**config.as_dict(), "aux_weight": 0.0, "stats_weight": 0.0}), train, val)
    assert all(h["train_aux"] == 0 and h["train_stats"] == 0 for h in plain.history)
    assert [h["train_bce"] for h in plain.history] != [h["train_bce"] for h in result.history]


def test_aux_needs_a_learned_code_and_targets(store):
    train, val = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch1", "val")
    with pytest.raises(ValueError, match="method 'statnn': auxiliary targets .* need a predictor with a learned code"):
        fit(TrainConfig(method="statnn", epochs=1, device="cpu", stats_weight=1.0), train, val)
    bare = ZooData(train.groups, train.y, train.model_ids, zoo="bare")
    with pytest.raises(ValueError, match="zoo 'bare': auxiliary record targets were asked for"):
        fit(TrainConfig(method="sne", epochs=1, device="cpu", aux_weight=1.0, hyper=SNE_SMALL), bare, val)
    bare_stats = fit(TrainConfig(method="sne", epochs=1, device="cpu", stats_weight=1.0, hyper=SNE_SMALL), bare, val)
    assert bare_stats.history[0]["train_stats"] > 0             # statistics need only the weights
    for name in ("aux_weight", "stats_weight"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
            TrainConfig(**{name: -1.0})


def test_tensor_statistics_rows_follow_snes_tensor_order(store):
    """Mixed Arch1 + Arch2 batch: row r of SNE's tensor vectors and row r of the per-tensor targets are the
    same tensor of the same network (checked against each network encoded alone and its own statistics)."""
    from sne_core.aux_targets import TensorStatsHead
    from sne_core.encoders.sne import SNE, SNEConfig
    a1, a2 = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch2", "train")
    groups = [a1.subset(torch.arange(3)).groups[0], a2.subset(torch.arange(2)).groups[0]]
    torch.manual_seed(0)
    model = SNE(SNEConfig(**SNE_SMALL)).eval()
    with torch.no_grad():
        _, T = model.encode(groups, tensor_codes=True)
    stats = statistic_targets(groups)
    head = TensorStatsHead(16, stats.shape[1])
    head.fit_scale(stats)
    target = head.targets(stats, groups)
    assert T.shape == (3 * 8 + 2 * 10, 16) and target.shape == (len(T), N_STATS)
    assert torch.isfinite(target).all()             # empty slots of the narrower architecture are left out
    r, b0 = 0, 0
    for ws in groups:
        n, t = len(ws), len(ws.arch.layout)
        for i in range(n):
            with torch.no_grad():
                _, alone = model.encode([ws.subset(torch.tensor([i]))], tensor_codes=True)   # [t, h]
            rows = r + torch.arange(t) * n + i
            torch.testing.assert_close(T[rows], alone, atol=1e-5, rtol=1e-4)
            own = (stats[b0 + i].view(-1, N_STATS)[:t] - head.stat_mean.view(-1, N_STATS)[:t]) / head.stat_std.view(-1, N_STATS)[:t]
            torch.testing.assert_close(target[rows], own)
        r, b0 = r + n * t, b0 + n


def test_sne_learns_its_tensors_statistics(store):
    train, val = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch1", "val")
    # 12 epochs: the loss sits near 1 (the targets' variance) for ~6 epochs before the tensor vectors spread out
    config = TrainConfig(method="sne", epochs=12, batch_size=8, lr=3e-3, patience=50, device="cpu", amp="none",
                         invariance_weight=0.0, stats_weight=0.0, tensor_stats_weight=1.0, hyper=SNE_SMALL)
    result = fit(config, train, val)
    losses = [h["train_tensor_stats"] for h in result.history]
    assert all(math.isfinite(a) and a > 0 for a in losses) and losses[-1] < 0.8 * losses[0]
    assert all(h["train_stats"] == 0 for h in result.history)
    assert not any("net.0" in k and "head" not in k for k in result.model.state_dict())   # the head stays behind
    with pytest.raises(ValueError, match="tensor_stats_weight must be a finite number >= 0"):
        TrainConfig(tensor_stats_weight=-1.0)


def test_neuron_statistics_read_each_neuron_and_are_permutation_invariant(store):
    from sne_core.aux_targets import N_NEURON_STATS, neuron_statistic_targets
    from sne_core.symmetry import permute_hidden
    a1, a2 = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch2", "train")
    groups = a1.groups + a2.groups                                    # Arch1 (4 layers) then Arch2 (5)
    L1, L2 = a1.groups[0].arch.n_layers, a2.groups[0].arch.n_layers
    got = neuron_statistic_targets(groups).view(len(a1) + len(a2), -1, N_NEURON_STATS)
    assert got.shape[1] == max(L1, L2) == L2 > L1
    # one network's layer, neuron by neuron
    ws, i, d = a1.groups[0], 3, 1
    p = {(info.depth, info.role): t[i] for t, info in zip(ws.params, ws.arch.layout)}
    w, b = p[(d, "weight")], p[(d, "bias")]                           # [out, in, k, k], [out]
    norms = np.array([w[o].norm().item() for o in range(len(b))])
    shares = b.numpy() / np.sqrt(norms ** 2 + b.numpy() ** 2)
    sums = np.array([w[o, j].sum().item() for o in range(w.shape[0]) for j in range(w.shape[1])])
    want = np.concatenate([np.quantile(x, [0, 0.25, 0.5, 0.75, 1]) for x in (norms, shares, sums)])
    np.testing.assert_allclose(got[i, d].numpy(), np.sign(want) * np.log1p(np.abs(want) / STAT_FLOOR), rtol=1e-4, atol=1e-4)
    # undefined: a linear layer's kernel sums, and the layer slots Arch1 does not have
    assert torch.isnan(got[:len(a1), L1 - 1, 10:]).all() and torch.isfinite(got[:len(a1), L1 - 1, :10]).all()
    assert torch.isnan(got[:len(a1), L1:]).all() and torch.isfinite(got[:len(a1), :L1 - 1]).all()
    assert torch.isfinite(got[len(a1):, :, :10]).all()
    # read as sets of neurons: a function-preserving permutation of the hidden units changes none of them
    permuted = permute_hidden(ws, torch.Generator().manual_seed(0))
    assert not torch.equal(permuted.params[0], ws.params[0])
    torch.testing.assert_close(neuron_statistic_targets([permuted]), neuron_statistic_targets([ws]), equal_nan=True)


def test_neuron_statistics_join_the_code_targets_only(store):
    from sne_core.aux_targets import N_NEURON_STATS
    from sne_core.encoders.sne import SNE, SNEConfig
    from sne_core.train import _aux_heads
    train, val = load_zoo(store, "mnist/arch1", "train"), load_zoo(store, "mnist/arch1", "val")
    model = SNE(SNEConfig(**SNE_SMALL))
    n_tensor, n_neuron = 8 * N_STATS, 4 * N_NEURON_STATS
    for neurons, width in ((True, n_tensor + n_neuron), (False, n_tensor)):
        head, tensor_head, stats, _ = _aux_heads(model, "sne", train, 0.0, 1.0, 1.0, neurons, "cpu")
        assert stats.shape == (len(train), width) and head.net[-1].out_features == head.n_records + width
        assert len(tensor_head.stat_mean) == n_tensor                 # the per-tensor head reads its own columns
    config = TrainConfig(method="sne", epochs=2, batch_size=8, lr=3e-3, patience=50, device="cpu", amp="none",
                         invariance_weight=0.0, stats_weight=1.0, tensor_stats_weight=1.0, hyper=SNE_SMALL)
    on, off = (fit(replace(config, neuron_stats=x), train, val) for x in (True, False))
    assert all(math.isfinite(h["train_stats"]) and h["train_tensor_stats"] > 0 for h in on.history)
    assert on.history[0]["train_stats"] != off.history[0]["train_stats"]
    assert fit(replace(config, neuron_stats=None, epochs=1), train, val).history[0] == off.history[0]   # SNE's default
    with pytest.raises(ValueError, match="neuron_stats must be true, false or null"):
        TrainConfig(neuron_stats="yes")
