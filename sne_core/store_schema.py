"""The two zoo tables of the weight store, and conversion between them and torch.

`models`: one row per network x checkpoint (ids, every hyperparameter, metrics, status).
`layers`: one row per pad-chunk of one parameter tensor of one checkpoint. `values` holds the
padded chunk, c elements x element_size values, flattened; `valid` is how many elements are
real (the rest is zero padding). The chunking is `sne_core.chunking`'s, so SNE reads these
rows as they are.

`dataset` and `arch` are not columns in the files: they are hive partition folders
(`dataset=mnist/arch=arch1`), which pyarrow and DuckDB turn back into columns.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from sne_core.archs import Arch
from sne_core.chunking import chunk_tensor, element_size
from sne_core.hparams import HParams
from sne_core.records import NetworkResult
from sne_core.store_io import StoreError

_PY_TO_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), "int": pa.int64(),
                "float": pa.float64(), "str": pa.string()}
HPARAM_COLUMNS = {f.name: _PY_TO_ARROW[f.type] for f in dataclasses.fields(HParams)}  # model_id first

MODELS_SCHEMA: dict[str, pa.DataType] = {
    **HPARAM_COLUMNS,
    "zoo_seed": pa.int64(),
    "epoch": pa.int32(),
    "is_final": pa.bool_(),      # the network's last checkpoint (its final weights, or where it diverged)
    "train_acc": pa.float64(),
    "train_loss": pa.float64(),
    "test_acc": pa.float64(),
    "test_loss": pa.float64(),
    "status": pa.string(),
    "diverged_epoch": pa.int32(),  # null unless status == "diverged"
}

LAYERS_SCHEMA: dict[str, pa.DataType] = {
    "model_id": pa.int64(),
    "epoch": pa.int32(),
    "layer": pa.int32(),          # depth among the parameterised layers, 0 = first conv
    "tensor": pa.string(),        # state-dict key
    "kind": pa.string(),          # conv | linear
    "role": pa.string(),          # weight | bias
    "shape": pa.list_(pa.int32()),  # original tensor shape
    "chunk": pa.int32(),          # chunk index within the tensor
    "element_size": pa.int32(),   # values per element: k*k for a conv kernel, else 1
    "valid": pa.int32(),          # real elements in this chunk (the rest is padding)
    "values": pa.list_(pa.float32()),  # chunk_size * element_size values, padded chunk flattened
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_name(what: str, name: str) -> str:
    """Dataset and arch names become folder names: keep them to a safe alphabet."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(f"{what} name {name!r} is not valid: expected letters, digits, '_', '.', '+', '-' "
                         "(it becomes a hive partition folder)")
    return name


def check_results(zoo: str, arch: Arch, results: list[NetworkResult]) -> None:
    """Refuse, before anything is written, results that do not match the arch layout."""
    if not results:
        raise StoreError(f"zoo {zoo}: write_networks got no results")
    seen = set()
    for r in results:
        mid = r.hparams.model_id
        if mid in seen:
            raise StoreError(f"zoo {zoo}: model_id {mid} appears twice in one write")
        seen.add(mid)
        if not r.checkpoints:
            raise StoreError(f"zoo {zoo}, model {mid}: no checkpoints; expected at least epoch 0 (the initial "
                             "weights), so that a network is never silently dropped")
        epochs = [c.epoch for c in r.checkpoints]
        if epochs != sorted(set(epochs)):
            raise StoreError(f"zoo {zoo}, model {mid}: checkpoint epochs {epochs} must be strictly increasing")
        for ck in r.checkpoints:
            where = f"zoo {zoo}, model {mid}, epoch {ck.epoch}"
            extra = set(ck.state) - {p.name for p in arch.layout}
            if extra:
                raise StoreError(f"{where}: state dict has keys {sorted(extra)} that architecture "
                                 f"{arch.name!r} does not have (expected {[p.name for p in arch.layout]})")
            for p in arch.layout:
                t = ck.state.get(p.name)
                if t is None:
                    raise StoreError(f"{where}: state dict lacks {p.name!r} (architecture {arch.name!r})")
                if tuple(t.shape) != p.shape:
                    raise StoreError(f"{where}: {p.name!r} has shape {tuple(t.shape)}, architecture "
                                     f"{arch.name!r} expects {p.shape}")
                if t.dtype != torch.float32:
                    raise StoreError(f"{where}: {p.name!r} has dtype {t.dtype}, expected torch.float32")


def models_table(results: list[NetworkResult], zoo_seed: int) -> pa.Table:
    rows = []
    for r in sorted(results, key=lambda r: r.hparams.model_id):
        hp = r.hparams.as_dict()
        last = r.checkpoints[-1].epoch
        for ck in r.checkpoints:
            rows.append({**hp, "zoo_seed": zoo_seed, "epoch": ck.epoch, "is_final": ck.epoch == last,
                         "train_acc": ck.train_acc, "train_loss": ck.train_loss, "test_acc": ck.test_acc,
                         "test_loss": ck.test_loss, "status": r.status, "diverged_epoch": r.diverged_epoch})
    return pa.Table.from_pylist(rows, schema=pa.schema(list(MODELS_SCHEMA.items())))


def _list_array(values: np.ndarray, width: int, typ: pa.DataType) -> pa.Array:
    """[rows, width] numpy -> list<...> array with `width` values per row (zero-copy values)."""
    offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)), type=typ)


def layers_table(arch: Arch, results: list[NetworkResult], chunk_size: int) -> pa.Table:
    """Every checkpoint of every network, pad-chunked; rows sorted by model, epoch, tensor, chunk."""
    pairs = [(r.hparams.model_id, ck) for r in sorted(results, key=lambda r: r.hparams.model_id)
             for ck in r.checkpoints]
    ids = np.array([m for m, _ in pairs], dtype=np.int64)
    epochs = np.array([ck.epoch for _, ck in pairs], dtype=np.int32)
    parts = []
    padded = len(pairs) * sum(-(-p.numel // element_size(p) // chunk_size) * chunk_size * element_size(p)
                              for p in arch.layout)
    if padded >= 2**31:   # list<float32> offsets are int32
        raise StoreError(f"architecture {arch.name!r}: {len(pairs)} checkpoints hold {padded} chunk values, more "
                         "than one Parquet file's list column can address (2**31); write fewer networks per call")
    for j, info in enumerate(arch.layout):
        stacked = torch.stack([ck.state[info.name].detach().cpu() for _, ck in pairs])  # [R, *shape]
        chunks, valid = chunk_tensor(stacked, info, chunk_size)                       # [R, m, c, e], [m]
        n_rows, m = chunks.shape[:2]
        e = element_size(info)
        parts.append(pa.table({
            "model_id": np.repeat(ids, m), "epoch": np.repeat(epochs, m),
            "layer": np.full(n_rows * m, info.depth, dtype=np.int32),
            "tensor": pa.repeat(pa.scalar(info.name), n_rows * m),
            "kind": pa.repeat(pa.scalar(info.kind), n_rows * m),
            "role": pa.repeat(pa.scalar(info.role), n_rows * m),
            "shape": _list_array(np.tile(np.array(info.shape, dtype=np.int32), n_rows * m), len(info.shape),
                                 pa.list_(pa.int32())),
            "chunk": np.tile(np.arange(m, dtype=np.int32), n_rows),
            "element_size": np.full(n_rows * m, e, dtype=np.int32),
            "valid": np.tile(valid.numpy().astype(np.int32), n_rows),
            "values": _list_array(chunks.reshape(n_rows * m, -1).numpy(), chunk_size * e, pa.list_(pa.float32())),
            "_param": np.full(n_rows * m, j, dtype=np.int32),
        }))
    table = pa.concat_tables(parts)
    order = pc.sort_indices(table, [("model_id", "ascending"), ("epoch", "ascending"),
                                    ("_param", "ascending"), ("chunk", "ascending")])
    return table.take(order).drop_columns(["_param"])


def expected_valid(n_elements: int, chunk_size: int) -> np.ndarray:
    """The `valid` column chunk_tensor produces for a tensor of n_elements elements."""
    m = -(-n_elements // chunk_size)
    v = np.full(m, chunk_size, dtype=np.int32)
    v[-1] = n_elements - (m - 1) * chunk_size
    return v


def decode_params(path: str, table: pa.Table, arch: Arch, want: np.ndarray, chunk_size: int) -> list[torch.Tensor]:
    """Layers rows of the networks `want` ([n, 2] model_id, epoch) -> one [n, *shape] tensor per parameter.

    Vectorised inverse of chunk_tensor (what `chunking.unchunk` does for one network): every
    chunk but the last is full, so concatenating chunks and cutting at n_elements is exact.
    Each row count, index, shape and valid length is checked, so a missing or duplicate row
    cannot silently shift weights between networks.
    """
    n = len(want)
    def key(mid, ep):  # one int64 per (model_id, epoch)
        return mid.astype(np.int64) * (1 << 31) + ep.astype(np.int64)
    want_key = key(want[:, 0], want[:, 1])
    by_key = np.argsort(want_key)
    t_key = key(table.column("model_id").to_numpy(), table.column("epoch").to_numpy())
    keep = np.isin(t_key, want_key)
    table, t_key = table.filter(pa.array(keep)), t_key[keep]
    tensor_col = table.column("tensor").to_numpy(zero_copy_only=False)
    out = []
    for info in arch.layout:
        e = element_size(info)
        n_el = info.numel // e
        valid = expected_valid(n_el, chunk_size)
        m = len(valid)
        sel = np.flatnonzero(tensor_col == info.name)
        rows = table.take(pa.array(sel))
        # order rows by (requested network order, chunk)
        pos = by_key[np.searchsorted(want_key, t_key[sel], sorter=by_key)]   # index into `want`
        order = np.lexsort((rows.column("chunk").to_numpy(), pos))
        rows, pos = rows.take(pa.array(order)), pos[order]
        where = f"{path}: tensor {info.name!r}"
        if len(rows) != n * m or not np.array_equal(pos, np.repeat(np.arange(n), m)):
            raise StoreError(f"{where}: expected {m} chunk rows for each of {n} checkpoints, found {len(rows)} "
                             "rows (missing or duplicate chunks)")
        if not np.array_equal(rows.column("chunk").to_numpy(), np.tile(np.arange(m), n)):
            raise StoreError(f"{where}: column 'chunk' is not 0..{m - 1} for every checkpoint")
        if not np.array_equal(rows.column("valid").to_numpy(), np.tile(valid, n)):
            raise StoreError(f"{where}: column 'valid' does not match chunk_size={chunk_size} for shape {info.shape}")
        if not (rows.column("element_size").to_numpy() == e).all():
            raise StoreError(f"{where}: column 'element_size' is not {e}")
        shapes = rows.column("shape").combine_chunks()
        if not (pc.list_value_length(shapes).to_numpy() == len(info.shape)).all() or not np.array_equal(
                shapes.flatten().to_numpy().reshape(-1, len(info.shape)), np.tile(info.shape, (len(rows), 1))):
            raise StoreError(f"{where}: column 'shape' is not {list(info.shape)} (architecture {arch.name!r})")
        values = rows.column("values").combine_chunks()
        if not (pc.list_value_length(values).to_numpy() == chunk_size * e).all():
            raise StoreError(f"{where}: column 'values' must hold chunk_size*element_size = {chunk_size * e} "
                             "values per row")
        flat = values.flatten().to_numpy().reshape(n, m * chunk_size, e)[:, :n_el]   # [n, n_elements, e]
        out.append(torch.from_numpy(flat.copy()).reshape(n, *info.shape))
    return out
