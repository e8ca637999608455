"""A results folder: what `scripts/paper_tables.py` writes (on the GPU machine or here) and
`sne import-results` reads back.

    in_distribution.csv, cross_dataset.csv, cross_architecture.csv   columns CSV_COLUMNS
    raw.csv       one row per (method, train zoo, test zoo, seed): the rows the tables come from
    tables.md     every table as Markdown (with R², L1 and the n/a reasons)
    run.json      sizes, device, wall times, the command
    predictions.parquet   optional: every test network's predicted and true accuracy (PREDICTION_COLUMNS),
                  so later analysis or a composite of two methods needs no refit (written with a checksum)

Reading checks every file: a missing file or column, a value of the wrong kind, or a table that
does not follow from raw.csv is refused with the file and the field named.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow.fs import LocalFileSystem   # already loaded by sne_core.store_io

from sne_core.protocols import format_table, tables_from_raw
from sne_core.store_io import atomic_write_bytes, read_parquet, write_parquet

CSV_COLUMNS = ["method", "train_zoo", "test_zoo", "tau_mean", "tau_std", "r2_mean", "l1_mean", "seeds"]
TABLES = ("in_distribution", "cross_dataset", "cross_architecture")
RAW_COLUMNS = ["method", "train_zoo", "test_zoo", "seed", "tau", "r2", "l1", "note"]
PREDICTION_COLUMNS = ["method", "train_zoo", "test_zoo", "seed", "model_id", "y_true", "y_pred"]


class ResultsError(ValueError):
    """A results folder that cannot be read back (names the file and the field)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see the old file or the whole new one, never a part."""
    atomic_write_bytes(LocalFileSystem(), str(path.resolve()), text.encode())   # the store's atomic write


def write_results(out: str | Path, raw: pd.DataFrame, meta: dict) -> dict[str, pd.DataFrame]:
    """Cut the three tables from `raw` and write the folder; returns the tables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = tables_from_raw(raw)
    atomic_write_text(out / "raw.csv", raw.to_csv(index=False))
    md = []
    for name, table in tables.items():
        atomic_write_text(out / f"{name}.csv", table[CSV_COLUMNS].to_csv(index=False))
        md += [f"## {name.replace('_', ' ')}", "", format_table(table), ""]
    atomic_write_text(out / "tables.md", "\n".join(md))
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2, default=str))
    return tables


def predictions_frame(method: str, train_zoo: str, by_seed: dict[int, dict]) -> pd.DataFrame:
    """{seed: {test_zoo: (model_ids, y_true, y_pred)}} (what `protocols.evaluate` hands `on_fit`) as
    one row per (seed, test zoo, test network)."""
    def cell(zoo, seed, ids, true, pred):
        return pd.DataFrame({"method": method, "train_zoo": train_zoo, "test_zoo": zoo, "seed": np.int64(seed),
                             "model_id": np.asarray(ids, np.int64), "y_true": np.asarray(true, np.float64),
                             "y_pred": np.asarray(pred, np.float64)})
    parts = [cell(zoo, seed, *p) for seed, preds in sorted(by_seed.items()) for zoo, p in preds.items()]
    # a job whose every cell is n/a has no predictions: an empty frame of the same column types
    return pd.concat(parts, ignore_index=True) if parts else cell("", 0, [], [], [])


def write_predictions(path: str | Path, df: pd.DataFrame) -> None:
    """Atomically, with the store's checksum, so a truncated or altered file is refused on reading."""
    # no pandas metadata: the checksum does not cover it, and reading would parse it (plain columns need none)
    table = pa.Table.from_pandas(df[PREDICTION_COLUMNS], preserve_index=False).replace_schema_metadata(None)
    write_parquet(LocalFileSystem(), str(Path(path).resolve()), table, {"table": "predictions"},
                  float_columns=("y_true", "y_pred"))


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A file written by write_predictions; refused (StoreError naming the file) if damaged."""
    schema = {"model_id": pa.int64(), "seed": pa.int64(), "y_true": pa.float64(), "y_pred": pa.float64()}
    table, _ = read_parquet(LocalFileSystem(), str(Path(path).resolve()), schema, "predictions")
    return table.to_pandas()


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ResultsError(f"{path}: file missing (a results folder holds {', '.join(t + '.csv' for t in TABLES)}, "
                           "raw.csv and run.json)")
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except Exception as e:   # unreadable CSV: say which file
        raise ResultsError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: field(s) {missing} missing; expected columns {columns}")
    for c in columns:
        if c in ("method", "train_zoo", "test_zoo"):
            bad = df[c].isna() | (df[c].astype(str).str.strip() == "")
            what = "a non-empty name"
        elif c == "note":
            df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
            continue
        elif c in ("seeds", "seed"):
            num = pd.to_numeric(df[c], errors="coerce")
            bad = num.isna() | (num < 0) | (num != np.floor(num))
            what = "an integer >= 0"
        else:
            num = pd.to_numeric(df[c], errors="coerce")
            bad = num.isna() & df[c].notna()      # empty (n/a) is allowed, text is not
            what = "a number or empty (n/a)"
            df[c] = num
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(f"{path}: field '{c}' row {row + 2} is {df[c].iloc[row]!r}; expected {what}")
    return df


def read_raw(path: str | Path) -> pd.DataFrame:
    """Raw rows (RAW_COLUMNS and whatever else the file holds) from a CSV, checked as raw.csv is."""
    return _read_csv(Path(path), RAW_COLUMNS)


def read_results(folder: str | Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    """(tables with every column of `tables_from_raw`, raw rows, run.json) of a results folder.
    The CSV tables must agree with the tables recomputed from raw.csv (means to 1e-6)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsError(f"{folder}: not a folder")
    raw = read_raw(folder / "raw.csv")
    try:
        meta = json.loads((folder / "run.json").read_text())
    except FileNotFoundError:
        raise ResultsError(f"{folder / 'run.json'}: file missing") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{folder / 'run.json'}: not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{folder / 'run.json'}: expected a JSON object")
    full = tables_from_raw(raw)
    for name in TABLES:
        path = folder / f"{name}.csv"
        csv = _read_csv(path, CSV_COLUMNS)
        mine = full[name].set_index(["method", "train_zoo", "test_zoo"])
        theirs = csv.set_index(["method", "train_zoo", "test_zoo"])
        if set(mine.index) != set(theirs.index):
            extra = sorted(set(theirs.index) ^ set(mine.index))[:3]
            raise ResultsError(f"{path}: rows (method, train_zoo, test_zoo) differ from what raw.csv gives, e.g. {extra}")
        for col in ("tau_mean", "r2_mean", "l1_mean"):
            a, b = theirs[col].reindex(mine.index).to_numpy(float), mine[col].to_numpy(float)
            off = ~((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= 1e-6))
            if off.any():
                i = int(np.flatnonzero(off)[0])
                raise ResultsError(f"{path}: field '{col}' of {mine.index[i]} is {a[i]}, but raw.csv gives "
                                   f"{b[i] if math.isfinite(b[i]) else 'n/a'}")
    return full, raw, meta
