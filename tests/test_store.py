"""The weight store: bit-exact round trips, DuckDB in place, atomic writes, resume, and every refusal.

Networks are synthetic (random state dicts with the architecture's layout): the store's job
is bytes and bookkeeping, so no training is needed here.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

import sne_core.store_io as store_io
from sne_core.store_io import read_parquet
from sne_core.archs import build_model, get_arch, parse_spec, resolve
from sne_core.hparams import sample_network
from sne_core.records import STATUS_DIVERGED, Checkpoint, NetworkResult
from sne_core.store import StoreError, ZooStore

ARCH1, ARCH2 = get_arch("arch1"), get_arch("arch2")
# a user-defined architecture that is never registered: the store must read it from its own spec
USER = resolve(parse_spec({"name": "tiny_mlp", "layers": [
    {"type": "conv", "out": 3, "kernel": 7, "stride": 3}, {"type": "act"}, {"type": "flatten"},
    {"type": "linear", "out": 12}, {"type": "act"}, {"type": "linear", "out": 10}]}))

SPECIAL = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1.2e-38, 3.4e38, -3.4e38, float("inf"), float("-inf"), 1.0],
                       dtype=torch.float32)


def random_state(arch, seed: int) -> dict[str, torch.Tensor]:
    """Random float32 weights incl. denormals, extremes, -0.0, inf and NaN (bit patterns must survive)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for p in arch.layout:
        t = torch.randn(p.shape, generator=g) * torch.exp(torch.randn(p.shape, generator=g) * 8)
        flat = t.reshape(-1)
        k = min(len(SPECIAL), flat.numel())
        flat[:k] = SPECIAL[:k]
        if flat.numel() > k:
            flat[k] = float("nan")
        state[p.name] = flat.reshape(p.shape).float()
    return state


def network(arch, model_id: int, epochs=(0, 1, 3), zoo_seed: int = 7, diverged_at: int | None = None,
            salt: int = 0) -> NetworkResult:
    ckpts = []
    for e in epochs:
        if diverged_at is not None and e > diverged_at:
            break
        acc = 0.1 + 0.8 * ((model_id * 37 + e * 11 + salt) % 100) / 100
        state = random_state(arch, 1000 * model_id + e + salt)
        ckpts.append(Checkpoint(e, acc + 0.01, 2.0 - acc, acc, 2.1 - acc, state))
    if diverged_at is not None:
        ckpts[-1].test_acc = float("nan")
        ckpts[-1].test_loss = float("nan")
    return NetworkResult(sample_network(zoo_seed, model_id, arch.spec.bias_init),
                         STATUS_DIVERGED if diverged_at is not None else "ok", diverged_at, ckpts)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.float32 and a[k].shape == b[k].shape
        assert torch.equal(bits(a[k]), bits(b[k])), k   # bit-identical, NaN payloads and -0.0 included


def files(root, pattern=None):
    """Every file under root (hidden temp files included), or those matching a glob pattern."""
    if pattern is not None:
        return sorted(glob.glob(os.path.join(root, pattern), recursive=True))
    return sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)


@pytest.fixture
def zoo(tmp_path):
    """Store with mnist/arch1 (ids 0..5, id 4 diverged) and fmnist/arch2 (ids 0..2), written in two parts."""
    store = ZooStore(tmp_path / "store")
    nets = {i: network(ARCH1, i, diverged_at=1 if i == 4 else None) for i in range(6)}
    store.write_networks("mnist", ARCH1, [nets[i] for i in range(3)], zoo_seed=7)
    store.write_networks("mnist", ARCH1, [nets[i] for i in range(3, 6)], zoo_seed=7)
    nets2 = {i: network(ARCH2, i) for i in range(3)}
    store.write_networks("fmnist", ARCH2, list(nets2.values()), zoo_seed=7)
    return store, nets, nets2


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("arch", [ARCH1, ARCH2, USER], ids=lambda a: a.name)
def test_round_trip_is_bit_identical(tmp_path, arch):
    store = ZooStore(tmp_path)
    nets = [network(arch, i) for i in (4, 0, 2)]          # unsorted on purpose
    store.write_networks("mnist", arch, nets, zoo_seed=7)
    for epoch in ("final", 0, 1, 3):
        ws, models = store.read_weights("mnist", arch.name, epoch)
        assert models.model_id.tolist() == [0, 2, 4] and len(ws) == 3
        for row, mid in enumerate(models.model_id):
            ck = next(n for n in nets if n.model_id == mid).checkpoints
            want = ck[-1] if epoch == "final" else next(c for c in ck if c.epoch == epoch)
            assert_same_state(ws.state_dict(row), want.state)
            assert models.epoch[row] == want.epoch
    assert_same_state(store.read_state_dict("mnist", arch.name, 2, epoch=1), nets[2].checkpoints[1].state)


def test_user_arch_read_back_without_registration(tmp_path):
    store = ZooStore(tmp_path)
    store.write_networks("mnist", USER, [network(USER, 0)], zoo_seed=7)
    spec = json.loads((tmp_path / "archs" / "tiny_mlp.json").read_text())
    assert spec["name"] == "tiny_mlp" and len(spec["layers"]) == 6
    ws, _ = ZooStore(tmp_path).read_weights("mnist", "tiny_mlp")
    assert ws.arch.layout == USER.layout
    assert ZooStore(tmp_path).arch("tiny_mlp").layout == USER.layout
    # the state dict loads into a real torch model of that architecture
    build_model(ws.arch).load_state_dict(ws.state_dict(0))


def test_subset_of_model_ids_and_diverged_final(zoo):
    store, nets, _ = zoo
    ws, models = store.read_weights("mnist", "arch1", "final", model_ids=[5, 4, 1])
    assert models.model_id.tolist() == [1, 4, 5]
    assert models.epoch.tolist() == [3, 1, 3]          # the diverged network stopped at epoch 1
    assert list(models.columns) == list(store.read_models().columns)
    assert_same_state(ws.state_dict(1), nets[4].checkpoints[-1].state)
    ws3, m3 = store.read_weights("mnist", "arch1", 3)  # epoch 3: the diverged network never got there
    assert 4 not in m3.model_id.tolist() and len(ws3) == 5
    ws0, m0 = store.read_weights("mnist", "arch1", model_ids=[])
    assert len(ws0) == 0 and m0.empty and ws0.arch.layout == ARCH1.layout


def test_models_table_contents(zoo):
    store, nets, _ = zoo
    df = store.read_models()
    assert list(df.columns[:4]) == ["model_id", "dataset", "arch", "zoo_seed"]
    for col in ["seed", "optimizer", "lr", "l2", "init", "init_std", "bias_init", "dropout", "activation",
                "train_fraction", "epoch", "is_final", "train_acc", "train_loss", "test_acc", "test_loss",
                "status", "diverged_epoch"]:
        assert col in df.columns
    m = df[(df.dataset == "mnist") & (df.arch == "arch1")]
    assert len(m) == 5 * 3 + 2                              # 5 networks x 3 checkpoints + the diverged one's 2
    assert (m.groupby("model_id").is_final.sum() == 1).all()
    for i, net in nets.items():
        rows = m[m.model_id == i].sort_values("epoch")
        hp = net.hparams.as_dict()
        for k, v in hp.items():
            assert (rows[k] == v).all(), k
        assert rows.epoch.tolist() == [c.epoch for c in net.checkpoints]
        assert rows.test_acc.tolist() == pytest.approx([c.test_acc for c in net.checkpoints], nan_ok=True)
        assert rows.status.iloc[0] == net.status
        assert rows.is_final.tolist() == [False] * (len(rows) - 1) + [True]
    div = m[m.model_id == 4]
    assert (div.status == "diverged").all() and (div.diverged_epoch == 1).all()
    assert m[m.model_id == 0].diverged_epoch.isna().all()
    assert set(df.arch[df.dataset == "fmnist"]) == {"arch2"}
    assert (df[df.arch == "arch2"].bias_init == 0.01).all()
    assert store.read_models("fmnist").model_id.unique().tolist() == [0, 1, 2]


def test_completed_ids_and_zoos(zoo, tmp_path):
    store, _, _ = zoo
    assert store.zoos() == [("fmnist", "arch2"), ("mnist", "arch1")]
    assert store.completed_ids("mnist", "arch1") == set(range(6))
    assert store.completed_ids("cifar10", "arch1") == set()   # a zoo not started yet is simply empty
    empty = ZooStore(tmp_path / "empty")
    assert empty.read_models().empty and empty.zoos() == [] and empty.accuracy_spread().empty


# ---------------------------------------------------------------- DuckDB in place

def test_accuracy_spread_matches_pandas(zoo):
    store, _, _ = zoo
    spread = store.accuracy_spread()
    assert spread[["dataset", "arch"]].values.tolist() == [["fmnist", "arch2"], ["mnist", "arch1"]]
    row = spread[spread.dataset == "mnist"].iloc[0]
    final = store.read_models("mnist", "arch1").query("is_final")
    acc = final.test_acc[np.isfinite(final.test_acc)]
    assert row.networks == 6 and row.diverged == 1
    assert row.test_acc_min == acc.min() and row.test_acc_max == acc.max()
    assert row.test_acc_median == pytest.approx(acc.median())
    assert row.test_acc_q25 == pytest.approx(acc.quantile(0.25))
    assert row.test_acc_q75 == pytest.approx(acc.quantile(0.75))


def test_top_k_weights_rebuild_the_best_networks(zoo):
    store, nets, _ = zoo
    k = 2
    rows = store.top_k_weights("mnist", "arch1", k)
    final = store.read_models("mnist", "arch1").query("is_final and status == 'ok'")
    best = final.sort_values(["test_acc", "model_id"], ascending=[False, True]).model_id[:k].tolist()
    assert rows.groupby("rank").model_id.first().tolist() == best
    # reassemble one tensor from its chunk rows: concatenate valid elements in chunk order
    top = rows[(rows["rank"] == 1) & (rows.tensor == "3.weight")].sort_values("chunk")
    elems = [np.asarray(v, dtype=np.float32).reshape(-1, e)[:n]
             for v, e, n in zip(top["values"], top.element_size, top.valid)]
    rebuilt = torch.from_numpy(np.concatenate(elems)).reshape(tuple(top["shape"].iloc[0]))
    assert torch.equal(bits(rebuilt), bits(nets[best[0]].checkpoints[-1].state["3.weight"]))


def test_connect_views_answer_sql(zoo):
    store, _, _ = zoo
    con = store.connect()
    n = con.execute("SELECT count(DISTINCT model_id) FROM models WHERE dataset='mnist' AND arch='arch1'").fetchone()[0]
    assert n == 6
    chunks = con.execute("""SELECT tensor, count(*) FROM layers WHERE dataset='mnist' AND model_id=0 AND epoch=3
                            GROUP BY tensor ORDER BY tensor""").fetchall()
    # 3.weight: 16*16 = 256 kernels -> 8 chunks of 32; 10.weight: 160 values -> 5 chunks
    assert dict(chunks) == {"0.weight": 1, "0.bias": 1, "3.weight": 8, "3.bias": 1, "6.weight": 8, "6.bias": 1,
                            "10.weight": 5, "10.bias": 1}


def test_connect_on_non_local_filesystem(tmp_path, zoo):
    store, _, _ = zoo
    sub = pafs.SubTreeFileSystem(str(tmp_path / "store"), pafs.LocalFileSystem())
    remote = ZooStore("", filesystem=sub)     # not a LocalFileSystem: DuckDB reads registered Arrow datasets
    assert remote.zoos() == store.zoos()
    pd.testing.assert_frame_equal(remote.accuracy_spread(), store.accuracy_spread())
    assert len(remote.top_k_weights("mnist", "arch1", 1)) == len(store.top_k_weights("mnist", "arch1", 1))


def test_docs_sql_runs(zoo, tmp_path):
    """The SQL that docs/STORE.md tells researchers to paste runs as written and answers correctly."""
    import duckdb
    store, _, _ = zoo
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "STORE.md")).read()
    sql = doc.split("```sql")[1].split("```")[0].replace("data/store", str(tmp_path / "store"))
    con = duckdb.connect()
    results = [con.execute(stmt).df() for stmt in sql.split(";") if stmt.strip().strip("-").strip()
               and not all(line.strip().startswith("--") or not line.strip() for line in stmt.splitlines())]
    spread, by_opt, best, norms = results[2:]
    assert spread.networks.tolist() == store.accuracy_spread().networks.tolist()
    assert by_opt.n.sum() == 6
    assert best.model_id.nunique() == 5
    assert len(norms) == 6 * len(ARCH1.layout)


def test_file_uri_root(tmp_path):
    uri = (tmp_path / "uri_store").as_uri()
    assert uri.startswith("file://")
    store = ZooStore(uri)
    nets = [network(ARCH2, i) for i in range(2)]
    store.write_networks("mnist", ARCH2, nets, zoo_seed=7)
    assert (tmp_path / "uri_store" / "models" / "dataset=mnist" / "arch=arch2").is_dir()
    ws, _ = ZooStore(str(tmp_path / "uri_store")).read_weights("mnist", "arch2")
    assert_same_state(ws.state_dict(1), nets[1].checkpoints[-1].state)
    assert store.accuracy_spread().networks.tolist() == [2]


# ---------------------------------------------------------------- atomic writes, resume, idempotence

def test_no_temp_files_left(zoo, tmp_path):
    every = files(tmp_path / "store")
    assert [f for f in every if os.path.basename(f).startswith(".")] == []
    assert len(every) == 3 + 3 + 2    # 3 models parts, 3 layers parts, 2 arch specs
    root = tmp_path / "store"
    assert len(files(root, "models/**/*.parquet")) == len(files(root, "layers/**/*.parquet")) == 3


def test_crash_during_rename_leaves_nothing_visible(tmp_path, monkeypatch):
    store = ZooStore(tmp_path)
    store.write_networks("mnist", ARCH1, [network(ARCH1, 0)], zoo_seed=7)
    before = files(tmp_path)

    def crash(*_):
        raise KeyboardInterrupt("simulated kill")
    monkeypatch.setattr(store_io, "_rename", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_networks("mnist", ARCH1, [network(ARCH1, 1)], zoo_seed=7)
    assert files(tmp_path) == before                     # no partial file, no temp file
    assert store.completed_ids("mnist", "arch1") == {0}


def test_crash_between_layers_and_models_then_resume(tmp_path, monkeypatch):
    """Killed after the layers file but before the models file: the network is not 'completed',
    readers ignore the orphan, and the rerun writes it once; garbage collection removes the orphan."""
    store = ZooStore(tmp_path)
    store.write_networks("mnist", ARCH1, [network(ARCH1, 0)], zoo_seed=7)
    real_rename, calls = store_io._rename, []

    def rename_then_die(fs, src, dst):
        calls.append(dst)
        if "/models/" in dst:
            # a real kill runs no cleanup: keep a copy of the temp file as the dead process would leave it
            shutil.copy(src, os.path.join(os.path.dirname(src), ".tmp-killed-" + os.path.basename(dst)))
            raise KeyboardInterrupt("simulated kill before the models file")
        real_rename(fs, src, dst)
    monkeypatch.setattr(store_io, "_rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.write_networks("mnist", ARCH1, [network(ARCH1, 1)], zoo_seed=7)
    monkeypatch.setattr(store_io, "_rename", real_rename)
    assert len(files(tmp_path, "layers/**/*.parquet")) == 2  # the orphan and a temp file exist...
    assert len([f for f in files(tmp_path) if "/.tmp-" in f]) == 1
    assert store.completed_ids("mnist", "arch1") == {0}      # ...but is not committed
    assert store.read_weights("mnist", "arch1")[1].model_id.tolist() == [0]
    assert store.connect().execute("SELECT count(DISTINCT model_id) FROM layers").fetchone()[0] == 1
    # resume: train only what is missing
    missing = sorted({0, 1, 2} - store.completed_ids("mnist", "arch1"))
    assert missing == [1, 2]
    store.write_networks("mnist", ARCH1, [network(ARCH1, i) for i in missing], zoo_seed=7)
    assert store.completed_ids("mnist", "arch1") == {0, 1, 2}
    assert store.collect_garbage() == []            # too young: might belong to a writer still running
    removed = store.collect_garbage(older_than_s=0)
    assert len(removed) == 2 and sum("/.tmp-" in f for f in removed) == 1
    assert len(files(tmp_path, "layers/**/*.parquet")) == 2
    assert [f for f in files(tmp_path) if "/." in f] == []


def test_resumed_zoo_equals_uninterrupted(tmp_path):
    ids = list(range(6))
    full = ZooStore(tmp_path / "full")
    full.write_networks("mnist", ARCH2, [network(ARCH2, i) for i in ids], zoo_seed=7)
    resumed = ZooStore(tmp_path / "resumed")
    resumed.write_networks("mnist", ARCH2, [network(ARCH2, i) for i in ids[:2]], zoo_seed=7)  # killed here
    for batch in ([2, 3], [4, 5]):   # the rerun trains only missing networks, in its own batches
        todo = [i for i in batch if i not in resumed.completed_ids("mnist", "arch2")]
        resumed.write_networks("mnist", ARCH2, [network(ARCH2, i) for i in todo], zoo_seed=7)
    pd.testing.assert_frame_equal(full.read_models(), resumed.read_models())
    (wa, _), (wb, _) = full.read_weights("mnist", "arch2"), resumed.read_weights("mnist", "arch2")
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(wa.params, wb.params))


def test_rewrite_same_ids_replaces_without_duplicates(zoo):
    store, nets, _ = zoo
    before = store.read_models("mnist", "arch1")
    store.write_networks("mnist", ARCH1, [nets[i] for i in range(3)], zoo_seed=7)  # identical rewrite
    pd.testing.assert_frame_equal(before, store.read_models("mnist", "arch1"))
    # a partial overlap with new values: ids 2..3 replaced, 0, 1, 4, 5 untouched
    new = [network(ARCH1, i, salt=5) for i in (2, 3)]
    store.write_networks("mnist", ARCH1, new, zoo_seed=7)
    after = store.read_models("mnist", "arch1")
    assert not after.duplicated(["model_id", "epoch"]).any() and sorted(after.model_id.unique()) == list(range(6))
    ws, models = store.read_weights("mnist", "arch1")
    assert_same_state(ws.state_dict(2), new[0].checkpoints[-1].state)
    assert_same_state(ws.state_dict(3), new[1].checkpoints[-1].state)
    assert_same_state(ws.state_dict(1), nets[1].checkpoints[-1].state)
    assert_same_state(ws.state_dict(5), nets[5].checkpoints[-1].state)
    assert store.connect().execute("SELECT count(*) FROM (SELECT DISTINCT model_id, epoch FROM layers "
                                   "WHERE dataset='mnist')").fetchone()[0] == len(after)
    store.delete_networks("mnist", "arch1", [0, 5])
    assert store.completed_ids("mnist", "arch1") == {1, 2, 3, 4}


def test_frames_round_trip(tmp_path):
    store = ZooStore(tmp_path)
    df = pd.DataFrame({"model_id": np.arange(5), "split": ["train", "val", "test", "test", "train"],
                       "tau": np.linspace(0, 1, 5)})
    store.write_frame("splits/mnist-arch1.parquet", df, {"seed": 3, "protocol": "nfn"})
    back = store.read_frame("splits/mnist-arch1.parquet", required_columns=["model_id", "split"])
    pd.testing.assert_frame_equal(df, back, check_dtype=False)
    assert back.attrs["metadata"] == {"seed": 3, "protocol": "nfn"}
    assert [f for f in files(tmp_path) if os.path.basename(f).startswith(".")] == []


# ---------------------------------------------------------------- refusals

def refused_byte_flips(path, read, unchanged, step: int) -> float:
    """Flip one byte of `path` at every `step`-th offset in turn and read it: each read must raise
    StoreError naming the file, or give what `unchanged` accepts. Returns the share refused; the
    file is left as it was."""
    good, refused, offsets = path.read_bytes(), 0, range(0, path.stat().st_size, step)
    try:
        for offset in offsets:
            data = bytearray(good)
            data[offset] ^= 0xFF
            path.write_bytes(bytes(data))
            try:
                assert unchanged(read()), offset
            except StoreError as e:
                assert str(path) in str(e)
                refused += 1
    finally:
        path.write_bytes(good)
    return refused / len(offsets)


def test_any_flipped_byte_of_a_frame_is_refused_or_changes_nothing(tmp_path):
    """Every 3rd offset, footer included: a frame's user metadata and pandas' are covered by
    sne.meta_sha256, so no flip can drop a key or change a value unnoticed."""
    store = ZooStore(tmp_path)
    df = pd.DataFrame({"model_id": np.arange(30), "split": ["train", "val", "test"] * 10, "tau": np.linspace(0, 1, 30)})
    store.write_frame("splits/a.parquet", df, {"seed": 3, "protocol": "nfn"})
    ref = store.read_frame("splits/a.parquet")
    share = refused_byte_flips(tmp_path / "splits" / "a.parquet", lambda: store.read_frame("splits/a.parquet"),
                               lambda back: back.equals(ref) and back.attrs == ref.attrs, step=3)
    assert share > 0.8


def test_a_file_from_before_the_metadata_digest_still_reads(tmp_path):
    store = ZooStore(tmp_path)
    store.write_frame("splits/a.parquet", pd.DataFrame({"model_id": [1, 2]}), {"seed": 3})
    path = str(tmp_path / "splits" / "a.parquet")
    table = pq.read_table(path)
    md = dict(table.schema.metadata)
    del md[store_io.META_DIGEST]
    pq.write_table(table.replace_schema_metadata(md), path)
    assert store.read_frame("splits/a.parquet").attrs["metadata"] == {"seed": 3}
    md[b"sne.user_metadata"] = b'{"seed": 4}'             # without the digest, only the columns are checked
    pq.write_table(table.replace_schema_metadata({**md, store_io.META_DIGEST: table.schema.metadata[store_io.META_DIGEST]}), path)
    with pytest.raises(StoreError, match="footer's metadata was altered"):
        store.read_frame("splits/a.parquet")


def _layers_file(root) -> str:
    return files(root, "layers/dataset=mnist/arch=arch1/*.parquet")[0]


def _rewrite(path, edit) -> None:
    """Rewrite a store file through `edit(table)`, keeping its original metadata (incl. the old checksum)."""
    table = pq.read_table(path)
    md = table.schema.metadata
    pq.write_table(edit(table).replace_schema_metadata(md), path)


def test_refuses_truncated_file(zoo, tmp_path):
    store, _, _ = zoo
    path = _layers_file(tmp_path / "store")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(StoreError, match="corrupted or truncated") as e:
        store.read_weights("mnist", "arch1")
    assert os.path.basename(path) in str(e.value)


def _flip_byte(path) -> None:
    """Flip one bit from a third of the way into the file on (same size, new content), at the first
    offset whose flip matters: some bytes (e.g. a column's min/max statistics) change nothing read."""
    good = open(path, "rb").read()
    for offset in range(len(good) // 3, len(good)):
        data = bytearray(good)
        data[offset] ^= 0x40
        open(path, "wb").write(bytes(data))
        try:
            read_parquet(pafs.LocalFileSystem(), str(path))
        except StoreError:
            return
    raise AssertionError(f"{path}: no flipped bit was refused")


def test_refuses_flipped_bytes(zoo, tmp_path):
    store, _, _ = zoo
    path = _layers_file(tmp_path / "store")
    _flip_byte(path)
    with pytest.raises(StoreError, match=os.path.basename(path)):
        store.read_weights("mnist", "arch1")


def test_refuses_wrong_checksum(zoo, tmp_path):
    """A well-formed file whose values no longer match the checksum it was written with."""
    store, _, _ = zoo
    path = _layers_file(tmp_path / "store")

    def nudge(t):
        vals = t.column("values").combine_chunks()
        flat = vals.flatten().to_numpy().copy()
        flat[123] = np.nextafter(flat[123], np.float32(np.inf), dtype=np.float32)   # one ulp
        new = pa.ListArray.from_arrays(vals.offsets, pa.array(flat))
        return t.set_column(t.column_names.index("values"), "values", new)
    _rewrite(path, nudge)
    with pytest.raises(StoreError, match="checksum mismatch"):
        store.read_weights("mnist", "arch1")


def test_a_remembered_part_changed_behind_the_store_is_read_again(zoo, tmp_path):
    store, _, _ = zoo
    store.read_models("mnist", "arch1")                        # reads and remembers every models part
    path = files(tmp_path / "store", "models/dataset=mnist/arch=arch1/*.parquet")[0]
    time.sleep(0.05)              # past the filesystem's timestamp granularity: same size, new mtime
    _flip_byte(path)
    with pytest.raises(StoreError, match=os.path.basename(path)):
        store.read_models("mnist", "arch1")


def test_growing_a_zoo_reads_each_committed_part_once(tmp_path, monkeypatch):
    """Every write checks the whole zoo; it must not re-read and re-hash every part each time
    (that made building a 2,000-network zoo quadratic)."""
    import sne_core.store as store_module
    reads = []

    def counting(fs, path, *args, **kw):
        reads.append(path)
        return read_parquet(fs, path, *args, **kw)
    monkeypatch.setattr(store_module, "read_parquet", counting)
    store = ZooStore(tmp_path / "store")
    for i in range(6):
        store.write_networks("mnist", ARCH1, [network(ARCH1, i, epochs=(0, 1))], zoo_seed=7,
                             protocol={"epochs": 1})
    models_reads = [p for p in reads if "/models/" in p]
    assert len(models_reads) == len(set(models_reads)) == 5     # parts 0..4, each once, by the next writes
    assert store.completed_ids("mnist", "arch1") == set(range(6))


def test_refuses_missing_column(zoo, tmp_path):
    store, _, _ = zoo
    path = _layers_file(tmp_path / "store")
    _rewrite(path, lambda t: t.drop_columns(["valid"]))
    with pytest.raises(StoreError, match="missing column 'valid'"):
        store.read_weights("mnist", "arch1")
    with pytest.raises(StoreError, match="missing column 'valid'"):
        store.connect()
    mpath = files(tmp_path / "store", "models/dataset=fmnist/**/*.parquet")[0]
    _rewrite(mpath, lambda t: t.drop_columns(["test_acc"]))
    with pytest.raises(StoreError, match="missing column 'test_acc'"):
        store.read_models("fmnist")


def test_refuses_wrong_column_type(zoo, tmp_path):
    store, _, _ = zoo
    path = _layers_file(tmp_path / "store")
    _rewrite(path, lambda t: t.set_column(t.column_names.index("values"), "values",
                                          t.column("values").cast(pa.list_(pa.float64()))))
    with pytest.raises(StoreError, match=r"column 'values' has type list<.*double>, expected list<.*float>"):
        store.read_weights("mnist", "arch1")


def test_refuses_chunk_size_mismatch(zoo, tmp_path):
    store, _, _ = zoo
    other = ZooStore(tmp_path / "store", chunk_size=16)
    with pytest.raises(StoreError, match="sne.chunk_size is 32, this ZooStore uses chunk_size=16"):
        other.read_weights("mnist", "arch1")
    with pytest.raises(StoreError, match="chunk_size"):
        other.write_networks("mnist", ARCH1, [network(ARCH1, 9)], zoo_seed=7)
    with pytest.raises(StoreError, match="positive integer"):
        ZooStore(tmp_path / "x", chunk_size=0)


def test_refuses_unknown_arch_without_spec(tmp_path):
    store = ZooStore(tmp_path)
    store.write_networks("mnist", USER, [network(USER, 0)], zoo_seed=7)
    (tmp_path / "archs" / "tiny_mlp.json").unlink()
    path = files(tmp_path, "layers/**/*.parquet")[0]
    table = pq.read_table(path)
    # a file from before sne.arch_spec (and the metadata digest) existed
    md = {k: v for k, v in table.schema.metadata.items() if k not in (b"sne.arch_spec", store_io.META_DIGEST)}
    pq.write_table(table.replace_schema_metadata(md), path)
    with pytest.raises(StoreError, match=r"unknown architecture 'tiny_mlp'.*no sne.arch_spec"):
        store.read_weights("mnist", "tiny_mlp")


def test_refuses_malformed_arch_spec(tmp_path):
    store = ZooStore(tmp_path)
    store.write_networks("mnist", USER, [network(USER, 0)], zoo_seed=7)
    spec = json.loads((tmp_path / "archs" / "tiny_mlp.json").read_text())
    spec["layers"][0]["kernel"] = 0
    (tmp_path / "archs" / "tiny_mlp.json").write_text(json.dumps(spec))
    with pytest.raises(StoreError, match=r"malformed architecture spec.*tiny_mlp.json.*'kernel'"):
        store.read_weights("mnist", "tiny_mlp")
    (tmp_path / "archs" / "tiny_mlp.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.arch("tiny_mlp")


def test_refuses_unknown_zoo_names(zoo):
    store, _, _ = zoo
    with pytest.raises(StoreError, match=r"no zoo cifar10/arch1; the store has: fmnist/arch2, mnist/arch1"):
        store.read_weights("cifar10", "arch1")
    with pytest.raises(StoreError, match="no zoo matches dataset='mnist' arch='arch9'"):
        store.read_models("mnist", "arch9")
    with pytest.raises(StoreError, match="no zoo svhn/arch1"):
        store.top_k_weights("svhn", "arch1", 3)
    with pytest.raises(StoreError, match=r"unknown architecture 'arch9'"):
        store.arch("arch9")
    with pytest.raises(StoreError, match=r"no model_id \[99\]"):
        store.read_weights("mnist", "arch1", model_ids=[1, 99])
    with pytest.raises(StoreError, match=r"no checkpoint at epoch 50; stored epochs: \[0, 1, 3\]"):
        store.read_weights("mnist", "arch1", epoch=50)
    with pytest.raises(StoreError, match="dataset name 'mnist/x' is not valid"):
        store.write_networks("mnist/x", ARCH1, [network(ARCH1, 0)], zoo_seed=7)


def test_refuses_state_dict_not_matching_arch(tmp_path):
    store = ZooStore(tmp_path)
    bad_shape = network(ARCH1, 0)
    bad_shape.checkpoints[1].state["3.weight"] = torch.zeros(16, 16, 5, 5)
    with pytest.raises(StoreError, match=r"model 0, epoch 1: '3.weight' has shape \(16, 16, 5, 5\).*\(16, 16, 3, 3\)"):
        store.write_networks("mnist", ARCH1, [bad_shape], zoo_seed=7)
    missing = network(ARCH1, 1)
    del missing.checkpoints[0].state["10.bias"]
    with pytest.raises(StoreError, match="lacks '10.bias'"):
        store.write_networks("mnist", ARCH1, [missing], zoo_seed=7)
    arch2_weights = network(ARCH2, 2)          # Arch2 weights written as Arch1
    with pytest.raises(StoreError, match="architecture 'arch1'"):
        store.write_networks("mnist", ARCH1, [arch2_weights], zoo_seed=7)
    double = network(ARCH1, 3)
    double.checkpoints[0].state = {k: v.double() for k, v in double.checkpoints[0].state.items()}
    with pytest.raises(StoreError, match="expected torch.float32"):
        store.write_networks("mnist", ARCH1, [double], zoo_seed=7)
    empty = NetworkResult(sample_network(7, 4))
    with pytest.raises(StoreError, match="no checkpoints"):
        store.write_networks("mnist", ARCH1, [empty], zoo_seed=7)
    assert store.zoos() == [] and files(tmp_path, "**/*.parquet") == []   # nothing was written


def test_refuses_inconsistent_zoo_writes(zoo, tmp_path):
    store, _, _ = zoo
    with pytest.raises(StoreError, match="zoo_seed"):
        store.write_networks("mnist", ARCH1, [network(ARCH1, 9, zoo_seed=8)], zoo_seed=8)
    impostor = resolve(parse_spec({"name": "arch1", "layers": [{"type": "flatten"}, {"type": "linear", "out": 10}]}))
    with pytest.raises(StoreError, match="built in with a different spec"):
        store.write_networks("mnist", impostor, [network(impostor, 0)], zoo_seed=7)
    os.replace(_layers_file(tmp_path / "store"), str(tmp_path / "gone.parquet"))
    with pytest.raises(StoreError, match="missing, but its models file commits it"):
        store.read_weights("mnist", "arch1")


def test_refuses_bad_frames(tmp_path):
    store = ZooStore(tmp_path)
    df = pd.DataFrame({"a": [1, 2]})
    for bad in ("../x.parquet", "/abs.parquet", "x.csv", "models/x.parquet"):
        with pytest.raises(StoreError, match="expected a relative path"):
            store.write_frame(bad, df)
    store.write_frame("results/t.parquet", df)
    with pytest.raises(StoreError, match=r"missing column 'tau'"):
        store.read_frame("results/t.parquet", required_columns=["tau"])
    with pytest.raises(StoreError, match="file not found"):
        store.read_frame("results/none.parquet")
    with pytest.raises(FileNotFoundError):        # sne_core.splits creates a split on first use this way
        store.read_frame("results/none.parquet")
    pq.write_table(pa.table({"a": [1]}), str(tmp_path / "results" / "foreign.parquet"))
    with pytest.raises(StoreError, match="expected a file written by ZooStore"):
        store.read_frame("results/foreign.parquet")
