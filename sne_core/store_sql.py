"""DuckDB over the weight store, in place: the `models` and `layers` views and two worked queries.

The views list the committed parts explicitly (a layers file counts only once its models file
exists, see sne_core.store), so a crashed write never shows up in a query. docs/STORE.md has
the same queries as plain SQL over globs, to paste into any DuckDB shell.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs

from sne_core.store_io import StoreError, footer_meta, is_local, join
from sne_core.store_schema import LAYERS_SCHEMA, MODELS_SCHEMA

SCHEMAS = {"models": MODELS_SCHEMA, "layers": LAYERS_SCHEMA}

ACCURACY_SPREAD = """
    SELECT dataset, arch,
           count(*)                                    AS networks,
           count(*) FILTER (WHERE status = 'diverged') AS diverged,
           min(test_acc)                 FILTER (WHERE isfinite(test_acc)) AS test_acc_min,
           quantile_cont(test_acc, 0.25) FILTER (WHERE isfinite(test_acc)) AS test_acc_q25,
           median(test_acc)              FILTER (WHERE isfinite(test_acc)) AS test_acc_median,
           quantile_cont(test_acc, 0.75) FILTER (WHERE isfinite(test_acc)) AS test_acc_q75,
           max(test_acc)                 FILTER (WHERE isfinite(test_acc)) AS test_acc_max
    FROM models WHERE is_final
    GROUP BY dataset, arch ORDER BY dataset, arch"""

# ties broken by model_id so the answer is deterministic; NaN accuracies (diverged) excluded,
# since DuckDB sorts NaN above every number
TOP_K_WEIGHTS = """
    WITH best AS (
        SELECT model_id, epoch, test_acc,
               row_number() OVER (ORDER BY test_acc DESC, model_id) AS rank
        FROM models
        WHERE dataset = $dataset AND arch = $arch AND is_final AND isfinite(test_acc)
        QUALIFY rank <= $k)
    SELECT best.rank, best.test_acc, l.*
    FROM layers l JOIN best USING (model_id, epoch)
    WHERE l.dataset = $dataset AND l.arch = $arch
    ORDER BY best.rank, l.layer, l.role DESC, l.chunk"""


def connect(store):
    """In-memory DuckDB connection with views `models` and `layers` over the store's committed parts.

    Local roots: views over read_parquet(<files>, hive_partitioning = true), so DuckDB scans
    the Parquet files in place. Other filesystems (s3://, ...): the pyarrow datasets are
    registered and DuckDB scans them through Arrow. Footers are checked first (schema, chunk
    size); ZooStore.verify() checks every byte against its checksum.
    """
    import duckdb
    con = duckdb.connect()
    for table, schema in SCHEMAS.items():
        files = []
        for d, a in store.zoos():
            for p in store._parts(d, a):
                path = join(store._zoo_dir(table, d, a), p)
                meta = footer_meta(store.fs, path, schema)
                if table == "layers":
                    store._check_chunk_size(path, meta)
                files.append(path)
        _register(con, table, files, store.fs, join(store.base, table))
    return con


def accuracy_spread(store):
    with connect(store) as con:
        return con.execute(ACCURACY_SPREAD).df()


def top_k_weights(store, dataset: str, arch: str, k: int):
    store._require_zoo(dataset, arch)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise StoreError(f"k must be a positive integer, got {k!r}")
    with connect(store) as con:
        return con.execute(TOP_K_WEIGHTS, {"dataset": dataset, "arch": arch, "k": k}).df()


def _register(con, name: str, files: list[str], fs: pafs.FileSystem, base: str) -> None:
    schema = pa.schema(list(SCHEMAS[name].items()) + [("dataset", pa.string()), ("arch", pa.string())])
    if not files:   # an empty store still answers queries (with no rows)
        con.register(f"_{name}_empty", schema.empty_table())
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
    elif is_local(fs):
        quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{quoted}], hive_partitioning = true, "
                    "hive_types = {'dataset': VARCHAR, 'arch': VARCHAR})")
    else:
        import pyarrow.dataset as ds
        part = ds.partitioning(pa.schema([("dataset", pa.string()), ("arch", pa.string())]), flavor="hive")
        con.register(name, ds.dataset(files, filesystem=fs, format="parquet", partitioning=part,
                                      partition_base_dir=base))
