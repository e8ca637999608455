"""`sne import-results DIR`: bring a results folder made elsewhere (the GPU machine, which has no
Dagster, MLflow or DuckDB) into this project's store and MLflow.

    sne import-results results/gpu-full                   # name = the folder's name
    sne import-results $OUT --name h200-2026-11-27

The folder is what `scripts/paper_tables.py` writes (`sne_core.results`); it is checked first,
and nothing is written if any file is refused. Then, per table:
- the store gets `imports/<name>/<table>.parquet` (all columns, written atomically) and
  `imports/<name>/raw.parquet`, which DuckDB reads like every other store table;
- MLflow gets a parent run "table: <table>" with one child run per method (the cells as
  metrics), tagged `sne.source=import` and `sne.import=<name>`, with run.json and the table's
  Markdown as artifacts and every run.json field as a param.
Importing the same folder twice logs nothing new (the runs carry a content key); `--new-runs`
logs again anyway.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="results folder (in_distribution.csv, cross_dataset.csv, cross_architecture.csv, "
                                  "raw.csv, run.json)")
    p.add_argument("--name", default=None, help="name of this import (default: the folder's name)")
    p.add_argument("--store", default=None, help="store root (default: the pipeline's, data/store)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the pipeline's sqlite store)")
    p.add_argument("--new-runs", action="store_true", help="log fresh MLflow runs even if this import exists")


def import_results(folder, name: str, store, tracker) -> dict[str, str]:
    """Read and check `folder`, write its tables to `store` (a ZooStore) and to MLflow through
    `tracker` (an MLflowTracker). Returns {table: MLflow parent run id}."""
    from assets.tables import plot_png
    from pipelines.mlflow_tracking import TASK, log_table_run
    from sne_core.protocols import format_table
    from sne_core.results import TABLES, read_results
    tables, raw, meta = read_results(folder)            # refuses a bad folder before any write
    store.write_frame(f"imports/{name}/raw.parquet", raw, metadata={"import": name})
    experiment_id = tracker.experiment_id(TASK)
    params = {f"run.{k}": v for k, v in meta.items()}
    runs = {}
    for table in TABLES:
        df = tables[table]
        path = f"imports/{name}/{table}.parquet"
        store.write_frame(path, df, metadata={"import": name, "table": table})
        key = tracker.run_key(import_name=name, table=table, rows=df.round(10).astype(str).to_csv(index=False))
        found = None if tracker.new_runs else tracker.find_run(experiment_id, key)
        if found is not None:
            runs[table] = found.info.run_id
            continue
        markdown = format_table(df)
        run_id = log_table_run(tracker, experiment_id, key=key, table=table, df=df, markdown=markdown,
                               plot_png=plot_png(table, df) if len(df) else None,
                               params={**params, "import": name}, parquet_uri=f"{store.root}/{path}")
        client = tracker.client()
        client.set_tag(run_id, "sne.source", "import")
        client.set_tag(run_id, "sne.import", name)
        tracker.log_artifact_file(run_id, Path(folder) / "run.json")
        runs[table] = run_id
    return runs


def run(args) -> int:
    from pipelines.resources import MLflowTracker, StoreResource
    from sne_core.results import ResultsError
    folder = Path(args.folder)
    name = args.name or folder.resolve().name
    store = StoreResource(**({"root": args.store} if args.store else {}))
    tracker = MLflowTracker(**({"tracking_uri": args.tracking_uri} if args.tracking_uri else {}),
                            new_runs=args.new_runs)
    try:
        runs = import_results(folder, name, store.get(), tracker)
    except ResultsError as e:
        print(f"sne import-results: {e}", file=sys.stderr)
        return 2
    for table, run_id in runs.items():
        print(f"{table:20s} store imports/{name}/{table}.parquet  mlflow run {run_id}")
    print(f"imported {name!r} into {store.uri()} and {tracker.uri()}")
    return 0
