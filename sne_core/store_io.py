"""Parquet files on any pyarrow filesystem: atomic writes, checksums, validated reads.

Every file the weight store writes goes through `write_parquet` and every file it reads
through `read_parquet`, so the guarantees hold for zoo tables and result frames alike:

- *Atomic*: the bytes go to a hidden temp file in the target folder, then one rename puts
  the finished file in place. Readers (and DuckDB globs on `*.parquet`) never see a partial
  file; a crash leaves only a `.tmp-*` file that every reader ignores.
- *Checked twice*: Parquet page CRCs catch bytes flipped on disk before decoding, and a
  sha256 of the decoded columns (file metadata `sne.sha256`) catches everything else
  (a rewritten file, a buggy copier). A third, `sne.meta_sha256`, covers the footer's own
  metadata (the zoo's protocol, a frame's user metadata), which the column checksum does not. Per file, not per row: one vectorised pass over the
  column buffers, and the file is the unit that is written atomically anyway.
- *Refused loudly*: any problem raises `StoreError` naming the file and what was expected.

pyarrow is imported lazily by the callers' modules (sne_core.store*) only.
"""
from __future__ import annotations

import hashlib
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
META_PREFIX = "sne."
TMP_PREFIX = ".tmp-"


class StoreError(ValueError):
    """Bad or corrupted data in the weight store; the message names the file and the field."""


class StoreFileNotFound(StoreError, FileNotFoundError):
    """A store file that does not exist: still a StoreError, and a FileNotFoundError so callers
    that create on first use (e.g. sne_core.splits.get_or_create_split) can catch it as such."""


def open_root(root, filesystem: "pafs.FileSystem | None" = None) -> tuple["pafs.FileSystem", str]:
    """A local path or any URI pyarrow accepts (file://, s3://, gs://, hdfs://) -> (fs, base path)."""
    root = os.fspath(root)
    if filesystem is not None:
        return filesystem, root.rstrip("/")
    if "://" in root:
        try:
            fs, path = pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise StoreError(f"store root {root!r}: pyarrow cannot open this URI: {e}") from e
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(root)


def is_local(fs: "pafs.FileSystem") -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p != "")


# ---------------------------------------------------------------- checksum

def _column_digest(h, arr: pa.Array) -> None:
    """Feed one column's logical content (not its buffer layout) into the hash."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=arr.type)
    t = arr.type
    # list field names differ between writers ("item" vs "element"); the child's type is hashed below
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    h.update(b"list" if is_list else str(t).encode())
    h.update(np.asarray(arr.is_null()).tobytes())
    if pa.types.is_dictionary(t):
        _column_digest(h, arr.dictionary_decode())
    elif is_list:
        import pyarrow.compute as pc
        h.update(np.asarray(pc.fill_null(pc.list_value_length(arr), 0)).astype(np.int64).tobytes())
        _column_digest(h, arr.flatten())
    elif pa.types.is_struct(t):
        for i in range(t.num_fields):
            _column_digest(h, arr.field(i))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        a = arr.cast(pa.large_binary())
        offsets = np.frombuffer(a.buffers()[1], dtype=np.int64)[a.offset: a.offset + len(a) + 1]
        h.update((offsets - offsets[0]).tobytes() if len(offsets) else b"")
        if len(offsets) and a.buffers()[2] is not None:
            h.update(memoryview(a.buffers()[2])[offsets[0]: offsets[-1]])
    else:
        values = arr.to_numpy(zero_copy_only=False)
        h.update(values.tobytes() if values.dtype != object else repr(values.tolist()).encode())


def table_digest(table: pa.Table) -> str:
    """sha256 over every column's name, type, null mask and values (bit-exact for floats)."""
    h = hashlib.sha256()
    for name, col in zip(table.column_names, table.columns):
        h.update(name.encode() + b"\0")
        _column_digest(h, col)
    return h.hexdigest()


META_DIGEST = b"sne.meta_sha256"


def metadata_digest(md: dict[bytes, bytes]) -> str:
    """sha256 over the footer's key-value metadata (sne.* and pandas', all but this digest): the
    column checksum does not cover it, and a flipped byte there could drop a key or change a value."""
    h = hashlib.sha256()
    for k in sorted(k for k in md if k != META_DIGEST):
        for b in (k, md[k]):
            h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def _sne_meta(path: str, raw: dict[bytes, bytes]) -> dict[str, str]:
    """The sne.* metadata without the prefix, refused if damaged. Files written before the metadata
    digest existed have none, and only the decoding is checked for them."""
    if META_DIGEST in raw and raw[META_DIGEST] != metadata_digest(raw).encode():
        raise StoreError(f"{path}: the footer's metadata was altered after it was written "
                         f"({META_DIGEST.decode()} does not match)")
    try:
        return {k.decode()[len(META_PREFIX):]: v.decode() for k, v in raw.items() if k.startswith(META_PREFIX.encode())}
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: damaged sne.* metadata in the Parquet footer ({e})") from e


# ---------------------------------------------------------------- write

def write_parquet(fs: "pafs.FileSystem", path: str, table: pa.Table, meta: dict[str, str],
                  float_columns: tuple[str, ...] = ()) -> None:
    """Write `table` with `meta` (keys get the `sne.` prefix) to `path`, atomically."""
    md = dict(table.schema.metadata or {})
    md.update({f"{META_PREFIX}{k}".encode(): str(v).encode() for k, v in meta.items()})
    md[b"sne.schema_version"] = str(SCHEMA_VERSION).encode()
    md[b"sne.sha256"] = table_digest(table).encode()
    md[META_DIGEST] = metadata_digest(md).encode()
    table = table.replace_schema_metadata(md)
    sink = pa.BufferOutputStream()
    # byte_stream_split + zstd compresses float weights well and keeps every bit;
    # page checksums let the reader refuse bytes flipped on disk.
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True,
                   use_byte_stream_split=list(float_columns) or False,
                   use_dictionary=[c for c in table.column_names if c not in float_columns])
    atomic_write_bytes(fs, path, sink.getvalue())


def atomic_write_bytes(fs: "pafs.FileSystem", path: str, data) -> None:
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")
    if is_local(fs):
        # Local: fsync the data before the rename so a power loss cannot leave a renamed but
        # empty file; os.replace is atomic on POSIX and Windows.
        os.makedirs(folder, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(memoryview(data))
                f.flush()
                os.fsync(f.fileno())
            _rename(fs, tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return
    # Object stores: a PUT is already all-or-nothing; temp + move keeps one code path.
    fs.create_dir(folder, recursive=True)
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        _rename(fs, tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def _rename(fs: "pafs.FileSystem", src: str, dst: str) -> None:
    """The commit point of every write (a separate function so tests can simulate a crash here)."""
    if is_local(fs):
        os.replace(src, dst)
    else:
        fs.move(src, dst)


# ---------------------------------------------------------------- read

def read_parquet(fs: "pafs.FileSystem", path: str, schema: dict[str, pa.DataType] | None = None,
                 table_kind: str | None = None) -> tuple[pa.Table, dict[str, str]]:
    """Read and validate one file: (table, sne metadata without the prefix)."""
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            table = pf.read()
    except FileNotFoundError as e:
        raise StoreFileNotFound(f"{path}: file not found") from e
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:   # a damaged footer can fail to decode
        raise StoreError(f"{path}: not a readable Parquet file (corrupted or truncated?): {e}") from e
    meta = _sne_meta(path, table.schema.metadata or {})
    if "schema_version" not in meta or "sha256" not in meta:
        raise StoreError(f"{path}: no sne.schema_version / sne.sha256 metadata; expected a file written by ZooStore")
    if meta["schema_version"] != str(SCHEMA_VERSION):
        raise StoreError(f"{path}: sne.schema_version is {meta['schema_version']}, "
                         f"this code reads version {SCHEMA_VERSION}")
    if table_kind is not None and meta.get("table") != table_kind:
        raise StoreError(f"{path}: sne.table is {meta.get('table')!r}, expected {table_kind!r}")
    if schema is not None:
        check_schema(path, table.schema, schema)
    got = table_digest(table.replace_schema_metadata(None))
    if got != meta["sha256"]:
        raise StoreError(f"{path}: checksum mismatch (sne.sha256 says {meta['sha256'][:16]}..., "
                         f"content hashes to {got[:16]}...); the file was altered after it was written")
    return table, meta


def check_schema(path: str, got: pa.Schema, expected: dict[str, pa.DataType]) -> None:
    for name, typ in expected.items():
        if name not in got.names:
            raise StoreError(f"{path}: missing column {name!r} (expected type {typ})")
        if not got.field(name).type.equals(typ):
            raise StoreError(f"{path}: column {name!r} has type {got.field(name).type}, expected {typ}")


def list_files(fs: "pafs.FileSystem", folder: str, suffix: str = ".parquet") -> list[pafs.FileInfo]:
    """Finished files under `folder` (recursive), temp and hidden files excluded, sorted by path."""
    sel = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    infos = [i for i in fs.get_file_info(sel)
             if i.type == pafs.FileType.File and i.path.endswith(suffix) and not i.base_name.startswith((".", "_"))]
    return sorted(infos, key=lambda i: i.path)


def footer_meta(fs: "pafs.FileSystem", path: str, schema: dict[str, pa.DataType] | None = None) -> dict[str, str]:
    """sne metadata from a file's footer only (cheap: no data pages are read); checks the schema if given."""
    try:
        with fs.open_input_file(path) as f:
            arrow_schema = pq.ParquetFile(f).schema_arrow
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:   # a damaged footer can fail to decode
        raise StoreError(f"{path}: not a readable Parquet file (corrupted or truncated?): {e}") from e
    if schema is not None:
        check_schema(path, arrow_schema, schema)
    return _sne_meta(path, arrow_schema.metadata or {})
