"""The weight store: model zoos on disk as hive-partitioned Parquet, queried in place by DuckDB.

    <root>/models/dataset=<d>/arch=<a>/part-<first>-<last>-<uid>.parquet   one row per network x checkpoint
    <root>/layers/dataset=<d>/arch=<a>/part-<first>-<last>-<uid>.parquet   one row per pad-chunk (same file name)
    <root>/archs/<arch>.json                                                every architecture spec ever written
    <root>/<relpath>.parquet                                                splits and result tables (write_frame)

A *part* is the pair of files one `write_networks` call produces. The models file is written
last and is the commit record: a layers file without its models twin belongs to a write that
crashed, and every reader ignores it. So `completed_ids` (read from models) never names a
network whose weights are missing, and a resumed zoo run retrains exactly the rest.

The root is a local path, a file:// URI, or any URI pyarrow's filesystems open (s3://, gs://,
hdfs://; credentials come from the usual environment variables). One writer per zoo at a time.
See docs/STORE.md for the schemas and SQL to paste into DuckDB.
"""
from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch

from sne_core import store_sql
from sne_core.archs import BUILTIN, Arch, ArchSpec, ArchSpecError, get_arch, resolve
from sne_core.chunking import DEFAULT_CHUNK_SIZE
from sne_core.records import NetworkResult
from sne_core.store_io import (TMP_PREFIX, StoreError, StoreFileNotFound, atomic_write_bytes, footer_meta, join,
                               list_files, open_root, read_parquet, write_parquet)
from sne_core.store_schema import (LAYERS_SCHEMA, MODELS_SCHEMA, check_name, check_results, decode_params,
                                   layers_table, models_table)
from sne_core.weights import WeightSet

__all__ = ["ZooStore", "StoreError", "StoreFileNotFound"]

RESERVED = ("models/", "layers/", "archs/")
# read_models / read_weights column order: ids first, then hyperparameters, then metrics
MODEL_COLUMNS = (["model_id", "dataset", "arch", "zoo_seed"]
                 + [c for c in MODELS_SCHEMA if c not in ("model_id", "zoo_seed")])


def _as_stored(protocol: dict) -> dict:
    """A protocol as it reads back from the sne.protocol metadata (JSON: tuples become lists)."""
    return json.loads(json.dumps(protocol, sort_keys=True))


class ZooStore:
    def __init__(self, root: str | os.PathLike, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 filesystem: pafs.FileSystem | None = None):
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise StoreError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.root = os.fspath(root)
        self.chunk_size = chunk_size
        self.fs, self.base = open_root(root, filesystem)
        self._memo: dict[tuple[str, str], tuple[tuple, object]] = {}
        if self.base:   # "" is the root of a filesystem passed in (e.g. a SubTreeFileSystem)
            self.fs.create_dir(self.base, recursive=True)

    def __repr__(self) -> str:
        return f"ZooStore({self.root!r}, chunk_size={self.chunk_size})"

    # ------------------------------------------------------------ paths

    def _zoo_dir(self, table: str, dataset: str, arch: str) -> str:
        return join(self.base, table, f"dataset={dataset}", f"arch={arch}")

    def _parts(self, dataset: str, arch: str) -> list[str]:
        """Committed parts of a zoo: file names that have a models file."""
        return [i.base_name for i in list_files(self.fs, self._zoo_dir("models", dataset, arch))]

    def zoos(self) -> list[tuple[str, str]]:
        """Every (dataset, arch) with at least one committed network, sorted."""
        out = set()
        for info in list_files(self.fs, join(self.base, "models")):
            rel = info.path[len(join(self.base, "models")) + 1:].split("/")
            if len(rel) == 3 and rel[0].startswith("dataset=") and rel[1].startswith("arch="):
                out.add((rel[0][len("dataset="):], rel[1][len("arch="):]))
        return sorted(out)

    def _require_zoo(self, dataset: str, arch: str) -> None:
        if (dataset, arch) not in self.zoos():
            have = ", ".join(f"{d}/{a}" for d, a in self.zoos()) or "none"
            raise StoreError(f"store {self.root}: no zoo {dataset}/{arch}; the store has: {have}")

    # ------------------------------------------------------------ architectures

    def _arch_path(self, name: str) -> str:
        return join(self.base, "archs", f"{name}.json")

    def _stored_spec(self, name: str) -> ArchSpec | None:
        path = self._arch_path(name)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            text = f.read().decode()
        try:
            spec = ArchSpec.from_json(text, source=path)
        except ArchSpecError as e:
            raise StoreError(f"malformed architecture spec: {e}") from e
        if spec.name != name:
            raise StoreError(f"{path}: field 'name' is {spec.name!r}, expected {name!r} (the file name)")
        return spec

    def arch(self, name: str) -> Arch:
        """An architecture as this store knows it: its stored spec, else the registry."""
        spec = self._stored_spec(name)
        if spec is not None:
            return resolve(spec)
        try:
            return get_arch(name)
        except ArchSpecError as e:
            raise StoreError(f"store {self.root}: {e}; no {self._arch_path(name)} either") from e

    def _file_arch(self, path: str, meta: dict[str, str], name: str) -> Arch:
        """The arch of one layers file: its own spec metadata, else archs/<name>.json, else the registry."""
        stored = self._stored_spec(name)
        if "arch_spec" in meta:
            try:
                spec = ArchSpec.from_json(meta["arch_spec"], source=f"{path} (metadata sne.arch_spec)")
            except ArchSpecError as e:
                raise StoreError(f"malformed architecture spec: {e}") from e
            if stored is not None and stored.to_json() != spec.to_json():
                raise StoreError(f"{path}: metadata sne.arch_spec differs from {self._arch_path(name)}")
            return resolve(spec)
        if stored is not None:
            return resolve(stored)
        try:
            return get_arch(name)
        except ArchSpecError as e:
            raise StoreError(f"{path}: unknown architecture {name!r}: the file has no sne.arch_spec metadata and "
                             f"the store has no {self._arch_path(name)} ({e})") from e

    def _save_arch(self, arch: Arch) -> None:
        name = arch.name
        if name in BUILTIN and BUILTIN[name].to_json() != arch.spec.to_json():
            raise StoreError(f"architecture name {name!r} is built in with a different spec; give yours another name")
        stored = self._stored_spec(name)
        if stored is None:
            atomic_write_bytes(self.fs, self._arch_path(name), arch.spec.to_json().encode())
        elif stored.to_json() != arch.spec.to_json():
            raise StoreError(f"{self._arch_path(name)}: architecture {name!r} is stored with a different spec; "
                             "give yours another name")

    # ------------------------------------------------------------ validated reads of one part

    def _remembered(self, kind: str, path: str, read):
        """`read()` of one file, validated once per store instance while the file stays unchanged.

        Every write checks the whole zoo (seeds, chunk size, protocol, which parts hold the ids it
        replaces); re-reading and re-hashing every part for that made a zoo build quadratic in its
        size. Committed files are never rewritten in place (each write makes a new uuid-named part),
        and the key holds the file's size and mtime, so a file changed behind the store's back is
        read and validated again. Only small things are kept: models tables and footer metadata."""
        info = self.fs.get_file_info(path)
        if info.mtime_ns is None:               # a filesystem that gives no mtime: read every time
            return read()
        stamp = (info.type, info.size, info.mtime_ns)
        hit = self._memo.get((kind, path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = read()
        self._memo[(kind, path)] = (stamp, value)
        return value

    def _footer(self, path: str) -> dict[str, str]:
        return self._remembered("footer", path, lambda: footer_meta(self.fs, path))

    def _read_models_part(self, dataset: str, arch: str, part: str) -> pa.Table:
        path = join(self._zoo_dir("models", dataset, arch), part)

        def read():
            table, meta = read_parquet(self.fs, path, MODELS_SCHEMA, "models")
            self._check_partition(path, meta, dataset, arch)
            return table
        return self._remembered("models", path, read)

    def _read_layers_part(self, dataset: str, arch: str, part: str) -> tuple[pa.Table, Arch, str]:
        path = join(self._zoo_dir("layers", dataset, arch), part)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise StoreError(f"{path}: missing, but its models file commits it (store damaged: delete the models "
                             f"file {join(self._zoo_dir('models', dataset, arch), part)} and rerun the zoo)")
        table, meta = read_parquet(self.fs, path, LAYERS_SCHEMA, "layers")
        self._check_partition(path, meta, dataset, arch)
        self._check_chunk_size(path, meta)
        return table, self._file_arch(path, meta, arch), path

    def _check_partition(self, path: str, meta: dict, dataset: str, arch: str) -> None:
        if meta.get("dataset") != dataset or meta.get("arch") != arch:
            raise StoreError(f"{path}: metadata says zoo {meta.get('dataset')}/{meta.get('arch')}, "
                             f"but the file lies in partition {dataset}/{arch}")

    def _check_chunk_size(self, path: str, meta: dict) -> None:
        if meta.get("chunk_size") != str(self.chunk_size):
            raise StoreError(f"{path}: metadata sne.chunk_size is {meta.get('chunk_size')}, this ZooStore uses "
                             f"chunk_size={self.chunk_size}; open it with ZooStore(root, chunk_size="
                             f"{meta.get('chunk_size')})")

    # ------------------------------------------------------------ writing networks

    def write_networks(self, dataset: str, arch: Arch, results: list[NetworkResult], zoo_seed: int,
                       protocol: dict | None = None) -> None:
        """Store every checkpoint of `results` as one part of zoo dataset/arch.

        `protocol` (ZooConfig.protocol(): epochs, images, batch, ...) is recorded in the part's
        metadata; a write under a protocol other than the zoo's recorded one is refused. Parts
        written without one (older stores, hand-made zoos) are not checked.

        Model ids already in the zoo are *replaced* (not refused): re-running a network is
        deterministic, so replacing makes a repeated write idempotent, and it lets a user
        retrain chosen networks. Replacement never leaves two committed copies of a network:
        the old part's models file is removed before the new one is committed (a crash in
        between only makes those networks 'missing', so a resumed run retrains them).
        """
        check_name("dataset", dataset)
        check_name("architecture", arch.name)
        zoo = f"{dataset}/{arch.name}"
        check_results(zoo, arch, results)
        self._save_arch(arch)
        old = {p: self._read_models_part(dataset, arch.name, p) for p in self._parts(dataset, arch.name)}
        for p, t in old.items():
            seeds = set(t.column("zoo_seed").to_pylist())
            if seeds != {zoo_seed}:
                raise StoreError(f"zoo {zoo}: {p} was written with zoo_seed {sorted(seeds)}, this write uses "
                                 f"{zoo_seed}; one zoo has one seed")
        for info in list_files(self.fs, self._zoo_dir("layers", dataset, arch.name)):
            self._check_chunk_size(info.path, self._footer(info.path))
        if protocol is not None:
            self.check_protocol(dataset, arch.name, protocol)
        self.collect_garbage()

        ids = sorted(r.hparams.model_id for r in results)
        part = f"part-{ids[0]:06d}-{ids[-1]:06d}-{uuid.uuid4().hex[:8]}.parquet"
        meta = {"dataset": dataset, "arch": arch.name, "zoo_seed": zoo_seed, "chunk_size": self.chunk_size}
        if protocol is not None:
            meta["protocol"] = json.dumps(protocol, sort_keys=True)
        write_parquet(self.fs, join(self._zoo_dir("layers", dataset, arch.name), part),
                      layers_table(arch, results, self.chunk_size),
                      {**meta, "table": "layers", "arch_spec": arch.spec.to_json()}, float_columns=("values",))
        self._remove_ids(dataset, arch.name, set(ids), old)
        write_parquet(self.fs, join(self._zoo_dir("models", dataset, arch.name), part),
                      models_table(results, zoo_seed), {**meta, "table": "models"})

    def protocol_conflicts(self, dataset: str, arch: str, protocol: dict) -> list[tuple[str, dict, list[int]]]:
        """(models file, its recorded protocol, its model ids) for every part of the zoo recorded under
        a protocol other than `protocol`. Parts with no record are not conflicts."""
        want = _as_stored(protocol)
        out = []
        for p in self._parts(dataset, arch):
            path = join(self._zoo_dir("models", dataset, arch), p)
            have = self._part_protocol(path)
            if have is not None and have != want:
                ids = sorted(set(self._read_models_part(dataset, arch, p).column("model_id").to_pylist()))
                out.append((path, have, ids))
        return out

    def recorded_protocols(self, dataset: str, arch: str) -> list[dict]:
        """The distinct training protocols the zoo's parts record (one for a zoo built by one
        ZooConfig; empty for a zoo written without one)."""
        out: list[dict] = []
        for p in self._parts(dataset, arch):
            have = self._part_protocol(join(self._zoo_dir("models", dataset, arch), p))
            if have is not None and have not in out:
                out.append(have)
        return out

    def _part_protocol(self, path: str) -> dict | None:
        meta = self._footer(path)
        if "protocol" not in meta:
            return None
        try:
            return json.loads(meta["protocol"])
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: metadata sne.protocol is not JSON ({e}); expected the zoo's "
                             "training protocol as written by ZooConfig.protocol()") from e

    def check_protocol(self, dataset: str, arch: str, protocol: dict) -> None:
        """Refuse to add networks trained under `protocol` to a zoo recorded under another one."""
        conflicts = self.protocol_conflicts(dataset, arch, protocol)
        if conflicts:
            path, have, ids = conflicts[0]
            want = _as_stored(protocol)
            diff = ", ".join(f"{k}={have.get(k)!r} there, {want.get(k)!r} here"
                             for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k))
            raise StoreError(f"zoo {dataset}/{arch}: {path} holds {len(ids)} network(s) trained under another "
                             f"protocol ({diff}; {len(conflicts)} part(s) in all). One zoo has one training "
                             "protocol: build into another store, use the stored settings, or delete_networks "
                             "those networks to retrain them")

    def delete_networks(self, dataset: str, arch: str, model_ids) -> None:
        """Remove networks (all their checkpoints) from a zoo; their ids become missing."""
        self._require_zoo(dataset, arch)
        old = {p: self._read_models_part(dataset, arch, p) for p in self._parts(dataset, arch)}
        self._remove_ids(dataset, arch, {int(i) for i in model_ids}, old)

    def _remove_ids(self, dataset: str, arch: str, ids: set[int], old: dict[str, pa.Table]) -> None:
        for part, models in old.items():
            mids = models.column("model_id").to_numpy()
            hit = np.isin(mids, list(ids))
            if not hit.any():
                continue
            layers, _, _ = self._read_layers_part(dataset, arch, part)
            models_path = join(self._zoo_dir("models", dataset, arch), part)
            layers_path = join(self._zoo_dir("layers", dataset, arch), part)
            meta = footer_meta(self.fs, layers_path)
            # uncommit first: from here until the rest is rewritten those networks count as missing
            self.fs.delete_file(models_path)
            if not hit.all():
                keep = sorted(set(mids[~hit].tolist()))
                new = f"part-{keep[0]:06d}-{keep[-1]:06d}-{uuid.uuid4().hex[:8]}.parquet"
                base = {k: meta[k] for k in ("dataset", "arch", "zoo_seed", "chunk_size", "arch_spec", "protocol")
                        if k in meta}
                lmask = pa.array(~np.isin(layers.column("model_id").to_numpy(), list(ids)))
                write_parquet(self.fs, join(self._zoo_dir("layers", dataset, arch), new),
                              layers.filter(lmask).replace_schema_metadata(None),
                              {**base, "table": "layers"},
                              float_columns=("values",))
                write_parquet(self.fs, join(self._zoo_dir("models", dataset, arch), new),
                              models.filter(pa.array(~hit)).replace_schema_metadata(None),
                              {**{k: v for k, v in base.items() if k != "arch_spec"}, "table": "models"})
            self.fs.delete_file(layers_path)

    def collect_garbage(self, older_than_s: float = 3600.0) -> list[str]:
        """Delete what crashed writes left: temp files and layers files with no models twin.

        Only files older than `older_than_s` go, so a write in flight in another process is
        never touched. Readers ignore these files anyway; this only reclaims space.
        """
        now = time.time()
        sel = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        removed = []
        for info in self.fs.get_file_info(sel):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(self.base) + 1:] if self.base else info.path
            orphan = (rel.startswith("layers/") and rel.endswith(".parquet") and not info.base_name.startswith(".")
                      and self.fs.get_file_info(join(self.base, "models", rel[len("layers/"):])).type
                      != pafs.FileType.File)
            if not (info.base_name.startswith(TMP_PREFIX) or orphan):
                continue
            age = now - info.mtime.timestamp() if info.mtime is not None else float("inf")
            if age >= older_than_s:
                self.fs.delete_file(info.path)
                removed.append(info.path)
        return removed

    # ------------------------------------------------------------ reading

    def completed_ids(self, dataset: str, arch: str) -> set[int]:
        """Model ids whose every checkpoint is committed (empty for a zoo not yet started)."""
        out: set[int] = set()
        for p in self._parts(dataset, arch):
            out.update(self._read_models_part(dataset, arch, p).column("model_id").to_pylist())
        return out

    def _models_frame(self, dataset: str, arch: str):
        frames = []
        for p in self._parts(dataset, arch):
            df = self._read_models_part(dataset, arch, p).to_pandas()
            df["_part"] = p
            frames.append(df)
        import pandas as pd
        df = pd.concat(frames, ignore_index=True)
        dup = df.duplicated(["model_id", "epoch"])
        if dup.any():
            raise StoreError(f"zoo {dataset}/{arch}: model_id {int(df.model_id[dup].iloc[0])} is stored in more than "
                             "one part (two writers at once?); delete_networks it and rerun")
        df.insert(1, "dataset", dataset)
        df.insert(2, "arch", arch)
        df["diverged_epoch"] = df["diverged_epoch"].astype("Int32")
        return df.sort_values(["model_id", "epoch"], ignore_index=True)[MODEL_COLUMNS + ["_part"]]

    def read_models(self, dataset: str | None = None, arch: str | None = None):
        """Every checkpoint row of the chosen zoos as a DataFrame, sorted by zoo, model_id, epoch."""
        import pandas as pd
        zoos = [z for z in self.zoos() if dataset in (None, z[0]) and arch in (None, z[1])]
        if not zoos and (dataset is not None or arch is not None):
            have = ", ".join(f"{d}/{a}" for d, a in self.zoos()) or "none"
            raise StoreError(f"store {self.root}: no zoo matches dataset={dataset!r} arch={arch!r}; "
                             f"the store has: {have}")
        if not zoos:
            return pd.DataFrame(columns=MODEL_COLUMNS)
        return pd.concat([self._models_frame(d, a) for d, a in zoos], ignore_index=True)[MODEL_COLUMNS]

    def read_weights(self, dataset: str, arch: str, epoch: int | str = "final", model_ids=None):
        """(WeightSet, models frame): one checkpoint per network, rows aligned and sorted by model_id.

        epoch="final" takes each network's last checkpoint (for a diverged network, where it
        stopped); an integer takes that epoch from every network that reached it; "all" takes every
        stored checkpoint (rows by model_id, then epoch), reading each file once.
        """
        self._require_zoo(dataset, arch)
        models = self._models_frame(dataset, arch)
        if epoch == "final":
            sel = models[models.is_final]
        elif epoch == "all":
            sel = models
        elif isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool):
            sel = models[models.epoch == int(epoch)]
            if sel.empty:
                raise StoreError(f"zoo {dataset}/{arch}: no checkpoint at epoch {epoch}; stored epochs: "
                                 f"{sorted(models.epoch.unique().tolist())}")
        else:
            raise StoreError(f"epoch must be an int, 'final' or 'all', got {epoch!r}")
        if model_ids is not None:
            want = sorted({int(i) for i in model_ids})
            missing = sorted(set(want) - set(sel.model_id.tolist()))
            if missing:
                raise StoreError(f"zoo {dataset}/{arch}: no model_id {missing[:10]} at epoch {epoch!r} "
                                 f"(stored ids: {len(set(models.model_id))} networks, "
                                 f"{int(models.model_id.min())}..{int(models.model_id.max())})")
            sel = sel[sel.model_id.isin(want)]
        if sel.empty:   # e.g. model_ids=[]: an empty WeightSet, still of the right architecture
            the_arch = self.arch(arch)
            return (WeightSet(the_arch, [torch.empty(0, *p.shape) for p in the_arch.layout]),
                    sel.drop(columns="_part").reset_index(drop=True))
        ids, params, the_arch = [], [], None
        for part, rows in sel.groupby("_part", sort=True):
            table, file_arch, path = self._read_layers_part(dataset, arch, part)
            if the_arch is not None and file_arch.spec.to_json() != the_arch.spec.to_json():
                raise StoreError(f"{path}: architecture spec differs from other parts of zoo {dataset}/{arch}")
            the_arch = file_arch
            want = rows[["model_id", "epoch"]].to_numpy(dtype=np.int64)
            params.append(decode_params(path, table, file_arch, want, self.chunk_size))
            ids.append(want[:, 0])
        order = np.argsort(np.concatenate(ids), kind="stable")
        stacked = [torch.cat([p[j] for p in params])[torch.from_numpy(order)] for j in range(len(the_arch.layout))]
        # stable: with epoch="all" a network's checkpoints keep their epoch order in both
        frame = sel.sort_values("model_id", kind="stable", ignore_index=True).drop(columns="_part")
        return WeightSet(the_arch, stacked), frame

    def read_state_dict(self, dataset: str, arch: str, model_id: int,
                        epoch: int | str = "final") -> dict[str, torch.Tensor]:
        ws, _ = self.read_weights(dataset, arch, epoch, [model_id])
        return {k: v.clone() for k, v in ws.state_dict(0).items()}

    def verify(self) -> int:
        """Read and checksum every committed file of every zoo; returns the number of networks checked."""
        n = 0
        for d, a in self.zoos():
            ws, _ = self.read_weights(d, a, "final")
            n += len(ws)
            for p in self._parts(d, a):   # every epoch, not only the final ones
                self._read_layers_part(d, a, p)
        return n

    # ------------------------------------------------------------ generic frames (splits, results)

    def _frame_path(self, relpath: str) -> str:
        rel = os.fspath(relpath).replace("\\", "/")
        if rel.startswith("/") or ".." in rel.split("/") or not rel.endswith(".parquet") or rel.startswith(RESERVED):
            raise StoreError(f"frame path {relpath!r}: expected a relative path ending in .parquet, "
                             f"without '..', outside {', '.join(RESERVED)}")
        return join(self.base, rel)

    def write_frame(self, relpath: str, df, metadata: dict | None = None) -> None:
        """Write a DataFrame atomically to <root>/<relpath>; `metadata` (JSON-able) comes back in df.attrs."""
        table = pa.Table.from_pandas(df)
        write_parquet(self.fs, self._frame_path(relpath), table,
                      {"table": "frame", "user_metadata": json.dumps(metadata or {}, sort_keys=True)})

    def read_frame(self, relpath: str, required_columns=()):
        """Read a frame written by write_frame (validated like every store file)."""
        path = self._frame_path(relpath)
        table, meta = read_parquet(self.fs, path, None, "frame")
        for c in required_columns:
            if c not in table.column_names:
                raise StoreError(f"{path}: missing column {c!r} (has {table.column_names})")
        df = table.to_pandas()
        df.attrs["metadata"] = json.loads(meta.get("user_metadata", "{}"))
        return df

    # ------------------------------------------------------------ DuckDB, in place (sne_core.store_sql)

    def connect(self):
        """In-memory DuckDB connection with views `models` and `layers` over the committed parts."""
        return store_sql.connect(self)

    def accuracy_spread(self):
        """Per zoo: networks, diverged, and min/q25/median/q75/max of final test accuracy (SQL in DuckDB)."""
        return store_sql.accuracy_spread(self)

    def top_k_weights(self, dataset: str, arch: str, k: int):
        """Chunk rows of the k networks with the best final test accuracy (SQL in DuckDB)."""
        return store_sql.top_k_weights(self, dataset, arch, k)
