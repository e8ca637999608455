"""Protocol tables and `sne train` on tiny synthetic zoos written through the real store."""
import math
import re

import numpy as np
import pandas as pd
import pytest

import sne_core.protocols as protocols
from sne_core.cli import main
from sne_core.protocols import (TABLE_COLUMNS, aggregate, cross_architecture, cross_dataset, evaluate, format_table,
                                in_distribution, load_zoo)
from sne_core.splits import get_or_create_split, ids_in
from sne_core.store import ZooStore
from sne_core.train import TrainConfig
from test_splits import write_synthetic_zoo

ZOOS = ["mnist/arch1", "fashion_mnist/arch1", "mnist/arch2"]
FAST = TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=5, device="cpu", amp="none")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = ZooStore(tmp_path_factory.mktemp("protocols") / "store")
    write_synthetic_zoo(s, "mnist", "arch1", 24, zoo_seed=1, diverged=(2,))
    write_synthetic_zoo(s, "fashion_mnist", "arch1", 24, zoo_seed=2)
    write_synthetic_zoo(s, "mnist", "arch2", 24, zoo_seed=3)
    return s


def test_evaluate_rows_and_na_for_unreadable_arch(store):
    raw = evaluate("mlp", store, "mnist/arch1", ZOOS, seeds=[0, 1], config=TrainConfig(**{**FAST.as_dict(), "epochs": 1}))
    assert list(raw[["test_zoo", "seed"]].itertuples(index=False, name=None)) == [
        (z, s) for s in (0, 1) for z in ZOOS]
    ok = raw[raw.test_zoo != "mnist/arch2"]
    assert ok[["tau", "r2", "l1"]].notna().all().all() and (ok.note == "").all()
    na = raw[raw.test_zoo == "mnist/arch2"]
    assert na[["tau", "r2", "l1"]].isna().all().all()
    assert na.note.str.match(r"n/a: MLP reads one parameter layout only").all()
    assert (ok.n_test == 12).all() and (ok.n_train == 9).all()      # 23 ok networks: 12 test, 9 train, 2 val


def test_method_that_cannot_read_the_training_arch_gives_na_rows(store):
    raw = evaluate("nfn_np", store, "mnist/arch2", ["mnist/arch2", "mnist/arch1"], seeds=[0, 1, 2], config=FAST)
    assert len(raw) == 6 and raw.tau.isna().all() and raw.note.str.startswith("n/a: NFN").all()


def test_composite_method_crosses_architectures_like_its_parts(store):
    config = TrainConfig(**{**FAST.as_dict(), "epochs": 1, "hyper": {"sne": {"hidden": 16, "heads": 2}}})
    raw = evaluate("sne_statnn", store, "mnist/arch1", ZOOS, seeds=[0], config=config)
    assert list(raw.test_zoo) == ZOOS and (raw.note == "").all()     # SNE and StatNN both read arch2
    assert raw[["tau", "r2", "l1"]].notna().all().all()


def test_fit_never_sees_test_networks(store, monkeypatch):
    seen = []
    real_fit = protocols.fit

    def spy(config, train, val, log=None, **kept):
        seen.append((set(train.model_ids), set(val.model_ids)))
        return real_fit(config, train, val, log, **kept)

    monkeypatch.setattr(protocols, "fit", spy)
    fits = []
    evaluate("statnn", store, "mnist/arch1", ["mnist/arch1"], seeds=[0, 1], config=FAST,
             on_fit=lambda seed, result, preds: fits.append((seed, preds)))
    split = get_or_create_split(store, "mnist", "arch1", 0)
    test = set(ids_in(split, "test"))
    assert len(seen) == 2
    for train_ids, val_ids in seen:
        assert train_ids == set(ids_in(split, "train")) and val_ids == set(ids_in(split, "val"))
        assert not (train_ids | val_ids) & test and 2 not in train_ids | val_ids    # 2 diverged: excluded
    ids, true, pred = fits[0][1]["mnist/arch1"]
    assert set(ids) == test and len(true) == len(pred) == len(test)


def test_all_checkpoints_train_on_every_epoch_of_train_networks_only(store, monkeypatch):
    final = load_zoo(store, "mnist/arch1", "train")
    every = load_zoo(store, "mnist/arch1", "train", checkpoints="all")
    models = store.read_models("mnist", "arch1")
    mine = models[models.model_id.isin(final.model_ids)]
    assert len(every) == len(mine) > len(final)                 # every stored checkpoint of those networks
    assert set(every.model_ids) == set(final.model_ids)         # and no other network
    assert np.isfinite(every.y.numpy()).all()
    # the final checkpoints are among them, targets unchanged; the earlier ones carry their own accuracy
    np.testing.assert_allclose(np.sort(every.y.numpy()), np.sort(mine["test_acc"].to_numpy(np.float32)))
    assert np.isin(final.y.numpy(), every.y.numpy()).all()
    seen = []
    real_fit = protocols.fit
    monkeypatch.setattr(protocols, "fit", lambda c, tr, va, log=None, **kept:
                        seen.append((len(tr), len(va))) or real_fit(c, tr, va, log, **kept))
    cfg = TrainConfig(**{**FAST.as_dict(), "train_checkpoints": "all"})
    raw = evaluate("statnn", store, "mnist/arch1", ["mnist/arch1"], seeds=[0], config=cfg)
    # training saw every checkpoint; validation and test stay final checkpoints
    assert seen == [(len(every), len(load_zoo(store, "mnist/arch1", "val")))] and (raw.n_test == 12).all()
    with pytest.raises(ValueError, match="train_checkpoints must be 'final' or 'all'"):
        TrainConfig(train_checkpoints="best")


def test_max_train_keeps_one_seeded_subset_of_training_networks(store):
    full = load_zoo(store, "mnist/arch1", "train")
    five = load_zoo(store, "mnist/arch1", "train", max_networks=5)
    assert len(five) == 5 and set(five.model_ids) < set(full.model_ids)
    assert list(load_zoo(store, "mnist/arch1", "train", max_networks=5).model_ids) == list(five.model_ids)
    assert set(load_zoo(store, "mnist/arch1", "train", max_networks=3).model_ids) < set(five.model_ids)
    assert list(load_zoo(store, "mnist/arch1", "train", max_networks=99).model_ids) == list(full.model_ids)  # a cap
    # with every checkpoint, whole networks are kept: all epochs of the same five, and no other
    every = load_zoo(store, "mnist/arch1", "train", checkpoints="all", max_networks=5)
    assert set(every.model_ids) == set(five.model_ids) and len(every) > 5
    raw = evaluate("statnn", store, "mnist/arch1", ["mnist/arch1"], seeds=[0, 1], config=FAST, max_train=5)
    assert (raw.n_train == 5).all() and (raw.n_test == 12).all()     # test split untouched
    with pytest.raises(ValueError, match="asked for 0 of 9 networks"):
        load_zoo(store, "mnist/arch1", "train", max_networks=0)


def test_aggregate_mean_and_sample_std_over_seeds():
    raw = pd.DataFrame({"method": "m", "train_zoo": "a/x", "test_zoo": "b/x", "seed": [0, 1, 2],
                        "tau": [0.5, 0.7, 0.9], "r2": [0.1, 0.2, 0.3], "l1": [0.05, 0.05, 0.05], "note": ""})
    row = aggregate(raw).iloc[0]
    assert list(aggregate(raw).columns) == TABLE_COLUMNS
    assert row.tau_mean == pytest.approx(0.7) and row.tau_std == pytest.approx(0.2)   # ddof = 1
    assert row.r2_mean == pytest.approx(0.2) and row.l1_mean == pytest.approx(0.05) and row.seeds == 3


def test_in_distribution_table(store):
    table = in_distribution(["statnn"], store, ZOOS, seeds=[0, 1], config=FAST)
    assert list(table.columns) == TABLE_COLUMNS
    assert list(zip(table.train_zoo, table.test_zoo)) == [(z, z) for z in ZOOS]
    assert (table.seeds == 2).all() and table.tau_mean.notna().all()


def test_cross_dataset_table_has_pairs_and_average(store):
    raw_out = []
    table = cross_dataset(["statnn", "deepsets"], store, ZOOS, seeds=[0, 1], config=FAST, raw_out=raw_out)
    pairs = [("mnist/arch1", "fashion_mnist/arch1"), ("fashion_mnist/arch1", "mnist/arch1")]
    for m in ("statnn", "deepsets"):
        rows = table[table.method == m]
        assert list(zip(rows.train_zoo, rows.test_zoo)) == pairs + [("average", "arch1")]   # arch2 has one zoo
        avg = rows.iloc[-1]
        raw = raw_out[0][raw_out[0].method == m]
        assert avg.tau_mean == pytest.approx(raw.groupby("seed").tau.mean().mean())
        assert avg.tau_std == pytest.approx(raw.groupby("seed").tau.mean().std())


def test_cross_architecture_table_both_directions_with_na(store):
    table = cross_architecture(["statnn", "nfn_np"], store, ZOOS, seeds=[0, 1], config=FAST)
    st = table[table.method == "statnn"]
    assert list(zip(st.train_zoo, st.test_zoo)) == [
        ("mnist/arch1", "mnist/arch2"), ("fashion_mnist/arch1", "mnist/arch2"), ("average", "arch1->arch2"),
        ("mnist/arch2", "mnist/arch1"), ("mnist/arch2", "fashion_mnist/arch1"), ("average", "arch2->arch1")]
    assert st.tau_mean.notna().all()
    nfn = table[table.method == "nfn_np"]
    assert len(nfn) == 6 and nfn.tau_mean.isna().all() and nfn.note.str.startswith("n/a: NFN").all()
    text = format_table(table)
    assert "| nfn_np | mnist/arch1 | mnist/arch2 | n/a | n/a | n/a | 0 | n/a: NFN" in text
    assert re.search(r"\| statnn \| average \| arch1->arch2 \| -?\d\.\d{3} ± \d\.\d{3} \|", text)


def test_cli_prints_table_and_tau_mean_last(store, capsys):
    rc = main(["train", "--method", "statnn", "--store", store.root, "--train-zoo", "mnist/arch1",
               "--test-zoos", "mnist/arch1,fashion_mnist/arch1,mnist/arch2", "--seeds", "2", "--epochs", "2",
               "--ema-epochs", "0.5", "--lr-schedule", "cosine", "--device", "cpu", "--config", '{"batch_size": 8, "lr": 0.01, "amp": "none"}'])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[0].startswith("| method | train zoo | test zoo | Kendall tau")
    assert len(out) == 2 + 3 + 1
    m = re.fullmatch(r"tau_mean=(-?\d+\.\d{4})", out[-1])
    assert m
    taus = [float(line.split("|")[4].split("±")[0]) for line in out[2:5]]
    assert float(m.group(1)) == pytest.approx(np.mean(taus), abs=2e-3)


def test_cli_bad_input_names_the_problem(store, capsys, tmp_path):
    assert main(["train", "--store", str(tmp_path / "nope"), "--train-zoo", "mnist/arch1"]) == 2
    assert "--store" in capsys.readouterr().err
    assert main(["train", "--store", store.root, "--train-zoo", "mnist-arch1"]) == 2
    assert "dataset/arch" in capsys.readouterr().err
    assert main(["train", "--store", store.root, "--train-zoo", "mnist/arch1", "--config", '{"epoch": 3}']) == 2
    assert "unknown TrainConfig field(s) ['epoch']" in capsys.readouterr().err
    assert main(["train", "--store", store.root, "--train-zoo", "cifar10/arch1"]) == 2
    assert "no zoo matches dataset='cifar10'" in capsys.readouterr().err


def test_cli_flags_override_the_config_file():
    import argparse
    from sne_core.train_cli import _load_config, add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--store", "s", "--train-zoo", "mnist/arch1", "--config", '{"neuron_stats": true, "stats_weight": 2}']
    config = _load_config(p.parse_args(base + ["--neuron-stats", "off", "--stats-weight", "0.5"]))
    assert (config.neuron_stats, config.stats_weight, config.method) == (False, 0.5, "sne")
    config = _load_config(p.parse_args(base))
    assert (config.neuron_stats, config.stats_weight) == (True, 2)
    assert _load_config(p.parse_args(base[:4])).neuron_stats is None           # the method's default
