"""Zoo trainer: checkpoints, divergence, vectorised == loop, determinism, resume, user specs, CLI.

Tiny on purpose (a few networks, 1-3 epochs, 1,000 MNIST images): behaviour, not speed.
"""
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sne_core.archs import get_arch, parse_spec, register_arch
from sne_core.data import load_dataset
from sne_core.hparams import sample_network
from sne_core.records import STATUS_DIVERGED, STATUS_OK
from sne_core.zoo import PROTOCOL_CHECKPOINTS, ZooConfig, plan_units, train_zoo
from sne_core.zoo_network import RunSpec, TrainData, train_network
from sne_core.zoo_vectorized import train_group

ROOT = Path(__file__).resolve().parents[1] / "data" / "datasets"


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", ROOT, max_train=1000, max_test=200)


@pytest.fixture(scope="module")
def tdata(mnist):
    return TrainData(mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test)


def tiny(n=4, epochs=1, **kw):
    kw = {"n_models": n, "epochs": epochs, "seed": 0, "eval_train_images": 300, **kw}
    return ZooConfig("mnist", kw.pop("arch", "arch1"), **kw)


def mixed_hparams(arch_name, n=4, fraction=1.0):
    """Networks covering every optimizer and both activations, one train fraction, sane learning rates."""
    arch = get_arch(arch_name)
    hps = []
    for i in range(n):
        h = sample_network(5, i, arch.spec.bias_init)
        hps.append(replace(h, train_fraction=fraction, optimizer=("sgd", "adam", "rmsprop")[i % 3],
                           activation=("relu", "tanh")[i % 2], lr=(0.05, 0.003, 0.002)[i % 3], dropout=0.3))
    return arch, hps


def assert_same_network(a, b, exact=False):
    assert a.status == b.status and a.diverged_epoch == b.diverged_epoch
    assert [c.epoch for c in a.checkpoints] == [c.epoch for c in b.checkpoints]
    for ca, cb in zip(a.checkpoints, b.checkpoints):
        for k in ca.state:
            if exact:
                assert torch.equal(ca.state[k], cb.state[k]), (a.model_id, ca.epoch, k)
            else:
                torch.testing.assert_close(ca.state[k], cb.state[k], rtol=1e-3, atol=1e-4)
        tol = 0 if exact else 1e-4
        assert abs(ca.test_loss - cb.test_loss) <= tol and abs(ca.train_loss - cb.train_loss) <= tol
        assert abs(ca.test_acc - cb.test_acc) <= (0 if exact else 2 / 200)


def test_checkpoint_epochs_follow_the_protocol():
    assert tiny(epochs=86).checkpoints() == PROTOCOL_CHECKPOINTS
    assert tiny(epochs=5).checkpoints() == (0, 1, 2, 3, 5)          # clipped, final always kept
    assert tiny(epochs=4, checkpoint_epochs=(2,)).checkpoints() == (0, 2, 4)


@pytest.mark.parametrize("field,value", [("n_models", 0), ("epochs", -1), ("batch_size", "512"),
                                         ("strategy", "fast"), ("amp", "fp8"), ("checkpoint_epochs", (9,))])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{"epochs": 2, field: value})


def test_checkpoints_hold_every_layout_tensor_and_metrics(mnist):
    results = train_zoo(tiny(n=3, epochs=2, strategy="vectorized"), mnist, progress=False)
    arch = get_arch("arch1")
    assert [r.model_id for r in results] == [0, 1, 2]
    for r in results:
        assert r.status == STATUS_OK and [c.epoch for c in r.checkpoints] == [0, 1, 2]
        for c in r.checkpoints:
            assert list(c.state) == [p.name for p in arch.layout]
            for p in arch.layout:
                t = c.state[p.name]
                assert t.shape == p.shape and t.dtype == torch.float32 and t.device.type == "cpu"
            assert 0 <= c.train_acc <= 1 and 0 <= c.test_acc <= 1
            assert c.train_loss > 0 and c.test_loss > 0
        assert torch.all(r.checkpoints[0].state["0.bias"] == 0)       # arch1 biases start at zero
        assert not torch.equal(r.checkpoints[0].state["0.weight"], r.checkpoints[-1].state["0.weight"])


@pytest.mark.parametrize("arch_name", ["arch1", "arch2"])
def test_vectorized_step_matches_per_network_training(tdata, arch_name):
    arch, hps = mixed_hparams(arch_name, n=3)       # sgd/relu, adam/tanh, rmsprop/relu
    run = RunSpec(epochs=2, checkpoint_epochs=(0, 1, 2), batch_size=500, eval_train_images=300)
    grouped = train_group(arch, hps, tdata, run)      # 4 steps per network, dropout masks from each network's own stream
    for h, g in zip(hps, grouped):
        assert_same_network(train_network(arch, h, tdata, run), g)


def test_grouped_evaluation_matches_one_network_at_a_time(tdata, monkeypatch):
    """CPU evaluates a group one network at a time (EVAL_GROUP); CUDA the whole group in one
    grouped forward. Both give every network the same metrics, mixed activations included."""
    import sne_core.zoo_vectorized as zv
    arch, hps = mixed_hparams("arch1", n=3)           # relu and tanh in one group
    run = RunSpec(epochs=1, checkpoint_epochs=(0, 1), batch_size=500, eval_train_images=300)
    one_by_one = train_group(arch, hps, tdata, run)
    monkeypatch.setattr(zv, "EVAL_GROUP", {})          # every device: the whole group at once
    for a, b in zip(one_by_one, train_group(arch, hps, tdata, run)):
        assert_same_network(a, b)


def test_networks_with_different_train_fractions_share_a_group(tdata):
    arch, hps = mixed_hparams("arch1", n=3)
    hps = [replace(h, train_fraction=f) for h, f in zip(hps, (0.25, 1.0, 0.5))]   # 1, 4 and 2 steps per epoch
    run = RunSpec(epochs=2, checkpoint_epochs=(0, 2), batch_size=256, eval_train_images=300)
    for h, g in zip(hps, train_group(arch, hps, tdata, run)):
        assert_same_network(train_network(arch, h, tdata, run), g)


def test_diverged_network_is_recorded_and_does_not_disturb_its_group(tdata):
    arch, hps = mixed_hparams("arch1", n=2)
    bad = replace(hps[0], optimizer="sgd", lr=1e30, model_id=99)
    run = RunSpec(epochs=2, checkpoint_epochs=(0, 1, 2), batch_size=512, eval_train_images=300)
    beside = {r.model_id: r for r in train_group(arch, [bad, hps[1]], tdata, run)}     # returned by model_id
    for r in (train_network(arch, bad, tdata, run), beside[99]):
        assert r.status == STATUS_DIVERGED and r.diverged_epoch in (1, 2)
        assert [c.epoch for c in r.checkpoints] == list(range(r.diverged_epoch))   # kept what it had
    healthy_alone = train_group(arch, [hps[1]], tdata, run)[0]
    healthy_beside = beside[hps[1].model_id]
    assert healthy_beside.status == STATUS_OK
    assert_same_network(healthy_alone, healthy_beside)


def test_same_seed_gives_an_identical_zoo_and_another_seed_does_not(mnist):
    a = train_zoo(tiny(n=4, strategy="vectorized", group_size=2), mnist, progress=False)
    b = train_zoo(tiny(n=4, strategy="vectorized", group_size=2), mnist, progress=False)
    for ra, rb in zip(a, b):
        assert ra.hparams == rb.hparams
        assert_same_network(ra, rb, exact=True)
    c = train_zoo(tiny(n=1, seed=1, strategy="vectorized"), mnist, progress=False)
    assert not torch.equal(c[0].checkpoints[-1].state["0.weight"], a[0].checkpoints[-1].state["0.weight"])


def test_units_are_fixed_by_the_whole_zoo_not_by_what_is_missing():
    hps = [sample_network(0, i) for i in range(40)]
    units = plan_units(hps, 4)
    assert [[h.model_id for h in u] for u in units] == [list(range(i, i + 4)) for i in range(0, 40, 4)]
    assert plan_units(hps[:10], 4)[-1] == hps[8:10]


def test_interrupted_run_resumes_to_the_same_zoo(mnist, tmp_path):
    from sne_core.store import ZooStore
    from sne_core.zoo import build_zoo
    config = tiny(n=5, strategy="vectorized", group_size=2)
    reference = train_zoo(config, mnist, progress=False)

    store, arch = ZooStore(tmp_path / "store"), get_arch("arch1")

    class Interrupt(Exception):
        pass

    def write_then_die(results):
        store.write_networks("mnist", arch, results, config.seed)
        raise Interrupt
    with pytest.raises(Interrupt):
        train_zoo(config, mnist, on_result=write_then_die, progress=False)
    first = store.completed_ids("mnist", "arch1")
    assert 0 < len(first) < 5

    summary = build_zoo(config, mnist, store, progress=False)
    assert store.completed_ids("mnist", "arch1") == set(range(5))
    assert summary.networks == 5 and summary.trained_now == 5 - len(first)
    for r in reference:
        stored = store.read_state_dict("mnist", "arch1", r.model_id, epoch=1)
        for k, v in r.checkpoints[-1].state.items():
            assert torch.equal(stored[k], v), (r.model_id, k)
    assert build_zoo(config, mnist, store, progress=False).trained_now == 0      # nothing left to do


def test_a_build_past_its_deadline_stops_after_one_unit_and_resumes(mnist, tmp_path):
    from sne_core.store import ZooStore
    from sne_core.zoo import build_zoo
    config = tiny(n=5, strategy="vectorized", group_size=2)
    store = ZooStore(tmp_path / "store")
    cut = build_zoo(config, mnist, store, progress=False, deadline=time.time())   # already past
    assert cut.trained_now == 2 and cut.missing == 3 and "missing=3 (rerun to resume)" in cut.format()
    rest = build_zoo(config, mnist, store, progress=False)
    assert rest.trained_now == 3 and rest.missing == 0 and "missing" not in rest.format()


@pytest.mark.parametrize("field, value", [("epochs", 2), ("max_images", 500), ("batch_size", 64)])
def test_a_zoo_is_not_grown_under_another_training_protocol(mnist, tmp_path, field, value):
    from sne_core.store import StoreError, ZooStore
    from sne_core.zoo import build_zoo
    config = tiny(n=2, strategy="vectorized", group_size=2)
    store = ZooStore(tmp_path / "store")
    build_zoo(config, mnist, store, progress=False)
    other = replace(config, n_models=4, **{field: value})
    with pytest.raises(StoreError, match=rf"models/dataset=mnist/arch=arch1/part-.*{field}="):
        build_zoo(other, mnist, store, progress=False)
    assert store.completed_ids("mnist", "arch1") == {0, 1}            # refused before training anything
    [(_, recorded, ids)] = store.protocol_conflicts("mnist", "arch1", other.protocol())
    assert recorded[field] == getattr(config, field) and sorted(ids) == [0, 1]
    # deleting one network rewrites its part: the survivor keeps its recorded protocol
    store.delete_networks("mnist", "arch1", [0])
    assert [ids for _, _, ids in store.protocol_conflicts("mnist", "arch1", other.protocol())] == [[1]]
    assert build_zoo(replace(config, n_models=3), mnist, store, progress=False).trained_now == 2   # same protocol grows


def test_user_spec_with_avgpool_and_flatten_trains_both_ways(tdata):
    arch = register_arch(parse_spec({"name": "test_avgpool_net", "layers": [
        {"type": "conv", "out": 4, "kernel": 3, "padding": 1}, {"type": "avgpool", "kernel": 2}, {"type": "act"},
        {"type": "conv", "out": 4, "kernel": 3, "stride": 2}, {"type": "act"}, {"type": "dropout"},
        {"type": "flatten"}, {"type": "linear", "out": 10}]}))
    hps = [replace(h, train_fraction=1.0, dropout=0.2) for h in mixed_hparams("arch1", n=3)[1]]
    run = RunSpec(epochs=1, checkpoint_epochs=(0, 1), batch_size=256, eval_train_images=300)
    grouped = train_group(arch, hps, tdata, run)
    for h, g in zip(hps, grouped):
        assert g.status == STATUS_OK and list(g.checkpoints[-1].state) == [p.name for p in arch.layout]
        assert_same_network(train_network(arch, h, tdata, run), g)


def test_training_lowers_the_loss(tdata):
    arch, hps = mixed_hparams("arch2", n=2)
    h = replace(hps[1], optimizer="adam", lr=0.01, dropout=0.0, activation="relu", init="he_normal", l2=1e-6)
    r = train_group(arch, [h], tdata, RunSpec(epochs=3, checkpoint_epochs=(0, 3), batch_size=128, eval_train_images=1000))[0]
    first, last = r.checkpoints
    assert last.train_loss < 0.8 * first.train_loss and last.test_acc > first.test_acc + 0.1


def test_cli_prints_the_summary_last(tmp_path, capsys):
    from sne_core.cli import main
    rc = main(["zoo", "--dataset", "mnist", "--arch", "arch1", "--models", "2", "--epochs", "1",
               "--max-images", "500", "--max-test-images", "200", "--store", str(tmp_path / "s"),
               "--data-root", str(ROOT), "--no-progress", "--strategy", "loop"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[-2].startswith("zoo mnist/arch1: networks=2 diverged=")
    assert out[-1].startswith("test accuracy quantiles: min=")


def test_an_images_seen_budget_sets_the_epochs_per_training_set(tmp_path):
    from sne_core.cli import main
    from sne_core.store import ZooStore
    from sne_core.zoo import epochs_for_images
    assert epochs_for_images(60_000, 60_000) == 1 and epochs_for_images(60_000, 1_438) == 42   # MNIST, digits
    assert epochs_for_images(100, 4_000) == 1                  # never 0 epochs
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        epochs_for_images(60_000, 0)
    # through the CLI: 1,000 images over a 500-image training set are 2 epochs, recorded as the zoo's protocol
    rc = main(["zoo", "--dataset", "mnist", "--arch", "arch1", "--models", "2", "--images-seen", "1000",
               "--max-images", "500", "--max-test-images", "200", "--store", str(tmp_path / "s"),
               "--data-root", str(ROOT), "--no-progress", "--strategy", "loop", "--workers", "1"])
    models = ZooStore(tmp_path / "s").read_models("mnist", "arch1")
    assert rc == 0 and models.loc[models["is_final"], "epoch"].tolist() == [2, 2]


@pytest.mark.parametrize("flag,value", [("--models", "0"), ("--images-seen", "0"), ("--epochs", "-1"),
                                        ("--batch-size", "x")])
def test_cli_refuses_a_bad_count_as_a_usage_error(tmp_path, capsys, flag, value):
    """A usage error (exit 2) naming the flag, before any dataset is loaded: --data-root does not exist."""
    from sne_core.cli import main
    argv = {"--models": "2", "--epochs": "1"}
    if flag == "--images-seen":
        del argv["--epochs"]
    argv[flag] = value
    with pytest.raises(SystemExit) as exit_:
        main(["zoo", "--dataset", "mnist", "--arch", "arch1", *[a for kv in argv.items() for a in kv],
              "--store", str(tmp_path / "s"), "--data-root", str(tmp_path / "no-data"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and flag in err and value in err
    assert not (tmp_path / "s").exists()


def test_strategy_calibration_is_cached_per_cpu_model(tdata, tmp_path, monkeypatch):
    """The cache key names the CPU's model: a calibration made on another machine of the same core
    count is not reused (machines of one kind change between sessions)."""
    import json
    from sne_core.devices import describe_device
    from sne_core.zoo import choose_strategy, strategy_cache_path
    monkeypatch.setenv("SNE_CACHE_DIR", str(tmp_path))
    arch, hps = mixed_hparams("arch1", n=2)
    run = RunSpec(epochs=1, checkpoint_epochs=(0, 1), batch_size=64, eval_train_images=300)
    chosen = choose_strategy(tiny(2, strategy="auto"), arch, tdata, hps, run)
    cache = json.loads(strategy_cache_path().read_text())
    [(key, entry)] = cache.items()
    assert key.startswith(f"{describe_device(torch.device('cpu'))}, {torch.get_num_threads()} threads|")
    assert chosen == entry["strategy"] == min(entry["s_per_network_step"], key=entry["s_per_network_step"].get)
