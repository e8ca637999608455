"""Splits by network: disjoint, seeded, stored beside the zoo, validated against the zoo on reuse.

`write_synthetic_zoo` (also used by test_train and test_protocols) writes a tiny zoo through the
real ZooStore: random weights whose scale sets the network's "test accuracy", so predictors have
something learnable and every test runs in seconds on 2 CPU cores.
"""
import numpy as np
import pytest
import torch

from sne_core.archs import get_arch
from sne_core.hparams import sample_network
from sne_core.records import STATUS_DIVERGED, STATUS_OK, Checkpoint, NetworkResult
from sne_core.splits import SplitError, get_or_create_split, ids_in, make_split, split_counts, split_path
from sne_core.store import ZooStore


def synthetic_network(arch, model_id: int, zoo_seed: int, diverged: bool = False) -> NetworkResult:
    """Two checkpoints; the final weights are N(0, s^2) with s drawn per network, and the final
    test accuracy is a smooth increasing function of s (so weight statistics predict it)."""
    g = torch.Generator().manual_seed(1000 * zoo_seed + model_id)
    s = 0.05 + 0.95 * torch.rand((), generator=g).item()
    state0 = {p.name: 0.1 * torch.randn(p.shape, generator=g) for p in arch.layout}
    state = {p.name: s * torch.randn(p.shape, generator=g) for p in arch.layout}
    acc = 0.1 + 0.85 / (1 + np.exp(-8 * (s - 0.5)))
    ckpts = [Checkpoint(0, 0.1, 2.3, 0.1, 2.3, state0), Checkpoint(2, acc, 1.0, acc, 1.0, state)]
    if diverged:
        ckpts[-1].test_acc = ckpts[-1].test_loss = float("nan")
    return NetworkResult(sample_network(zoo_seed, model_id, arch.spec.bias_init),
                         STATUS_DIVERGED if diverged else STATUS_OK, 2 if diverged else None, ckpts)


def write_synthetic_zoo(store, dataset: str, arch, n: int, zoo_seed: int = 0, diverged=(), ids=None):
    """`arch`: a registered name or an Arch (e.g. a tiny user architecture)."""
    a = get_arch(arch) if isinstance(arch, str) else arch
    ids = range(n) if ids is None else ids
    store.write_networks(dataset, a, [synthetic_network(a, i, zoo_seed, i in diverged) for i in ids], zoo_seed)


@pytest.fixture
def store(tmp_path):
    s = ZooStore(tmp_path / "store")
    write_synthetic_zoo(s, "mnist", "arch1", 22, diverged=(3, 17))
    return s


def test_split_is_by_network_with_default_fractions(store):
    models = store.read_models("mnist", "arch1")          # two checkpoints per network
    split = make_split(models, seed=0)
    assert sorted(split.model_id) == list(range(22))       # every network exactly once
    assert split_counts(split) == {"train": 8, "val": 2, "test": 10, "excluded": 2}   # 20 ok: 10 | 10 -> 8/2
    parts = [set(ids_in(split, p)) for p in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_diverged_networks_are_excluded_and_counted(store):
    split = make_split(store.read_models("mnist", "arch1"), seed=0)
    excluded = split[split.split == "excluded"]
    assert sorted(excluded.model_id) == [3, 17]
    assert all(excluded.note == "excluded: status=diverged")
    assert (split.loc[split.split != "excluded", "note"] == "").all()


def test_split_is_seeded_and_independent_of_row_order(store):
    models = store.read_models("mnist", "arch1")
    a = make_split(models, seed=5)
    b = make_split(models.sample(frac=1.0, random_state=1), seed=5)
    assert a.equals(b)
    c = make_split(models, seed=6)
    assert not np.array_equal(ids_in(a, "test"), ids_in(c, "test"))


def test_split_is_stored_beside_the_zoo_and_reused(store, tmp_path):
    first = get_or_create_split(store, "mnist", "arch1", seed=0)
    path = tmp_path / "store" / split_path("mnist", "arch1", 0)
    assert path.is_file()
    assert store.read_frame(split_path("mnist", "arch1", 0)).attrs["metadata"]["n_excluded"] == 2
    written = path.stat().st_mtime_ns
    again = get_or_create_split(store, "mnist", "arch1", seed=0, test_frac=0.3)   # stored split wins
    assert list(again.split) == list(first.split)
    assert path.stat().st_mtime_ns == written                                       # read, not rewritten


def test_regenerated_zoo_with_other_ids_is_refused(store):
    get_or_create_split(store, "mnist", "arch1", seed=0)
    store.delete_networks("mnist", "arch1", [0, 1])
    write_synthetic_zoo(store, "mnist", "arch1", 2, ids=[40, 41])
    with pytest.raises(SplitError, match=r"ids in the split are not in the zoo.*regenerated.*Delete this split file"):
        get_or_create_split(store, "mnist", "arch1", seed=0)
    with pytest.raises(SplitError, match=r"ids in the split are not in the zoo"):   # no growing a regenerated zoo
        get_or_create_split(store, "mnist", "arch1", seed=0, grow=True)


def test_grown_zoo_is_refused_unless_grown_and_grown_keeps_every_part(store, tmp_path):
    first = get_or_create_split(store, "mnist", "arch1", seed=0)
    write_synthetic_zoo(store, "mnist", "arch1", 0, ids=range(22, 44))       # 22 more networks, all ok
    with pytest.raises(SplitError, match=r"22 networks of the zoo are not in the split.*sne split --grow"):
        get_or_create_split(store, "mnist", "arch1", seed=0)
    grown = get_or_create_split(store, "mnist", "arch1", seed=0, grow=True)
    assert sorted(grown.model_id) == list(range(44))
    old = grown[grown.model_id < 22].reset_index(drop=True)
    assert old[["model_id", "split", "note"]].equals(first[["model_id", "split", "note"]])   # nobody moved
    new = grown[grown.model_id >= 22]
    assert split_counts(new) == {"train": 9, "val": 2, "test": 11, "excluded": 0}   # the stored 50% / 80-20
    stored = store.read_frame(split_path("mnist", "arch1", 0))
    assert list(stored.split) == list(grown.split) and stored.attrs["metadata"]["n_test"] == 21
    assert list(get_or_create_split(store, "mnist", "arch1", seed=0).split) == list(grown.split)   # now it matches
    path = tmp_path / "store" / split_path("mnist", "arch1", 0)
    written = path.stat().st_mtime_ns
    get_or_create_split(store, "mnist", "arch1", seed=0, grow=True)          # nothing new: not rewritten
    assert path.stat().st_mtime_ns == written


def test_sne_split_command_grows_and_prints_the_counts(store, tmp_path, capsys):
    from sne_core.cli import main
    root = str(tmp_path / "store")
    assert main(["split", "--store", root, "--zoo", "mnist/arch1"]) == 0
    assert capsys.readouterr().out.strip().endswith("train=8 val=2 test=10 excluded=2")
    write_synthetic_zoo(store, "mnist", "arch1", 0, ids=range(22, 26))
    with pytest.raises(SystemExit, match=r"sne split: .*4 networks of the zoo are not in the split"):
        main(["split", "--store", root, "--zoo", "mnist/arch1"])
    assert main(["split", "--store", root, "--zoo", "mnist/arch1", "--grow"]) == 0
    assert capsys.readouterr().out.strip().endswith("train=9 val=3 test=12 excluded=2")   # 4 new: 2 | 1 | 1


def test_too_small_zoo_and_bad_fractions(tmp_path):
    s = ZooStore(tmp_path / "s")
    write_synthetic_zoo(s, "mnist", "arch2", 3, diverged=(0,))
    with pytest.raises(SplitError, match="at least 3 networks"):
        make_split(s.read_models("mnist", "arch2"), seed=0)
    with pytest.raises(SplitError, match="test_frac"):
        make_split(s.read_models("mnist", "arch2"), seed=0, test_frac=1.0)
