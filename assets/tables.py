"""The three result tables (SPEC §1), assets in their own right: Parquet in the store, a
Markdown table and a plot in the asset's metadata, and a parent MLflow run per table.

They read the raw per-seed rows the `predictors` partitions stored and aggregate them with
`sne_core.protocols.tables_from_raw` (mean ± std over seeds, average rows, n/a with its reason):
no training here.
"""

import base64
import io
import math

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.predictors import predictions_path, predictors
from pipelines.mlflow_tracking import TASK, log_table_run
from pipelines.profiles import RunProfile
from pipelines.resources import MLflowTracker, StoreResource

TABLES = ("in_distribution", "cross_dataset", "cross_architecture")


def table_path(table: str) -> str:
    return f"tables/{table}.parquet"


def load_raw(zoo_store, profile: RunProfile):
    """Every stored per-seed row of the profile's methods x training zoos; refuses missing ones."""
    import pandas as pd
    frames, missing = [], []
    for method in profile.methods:
        for d, a in profile.zoos():
            try:
                frames.append(zoo_store.read_frame(predictions_path(method, d, a)))
            except FileNotFoundError:
                missing.append(f"{method}|{d}-{a}")
    if missing:
        raise FileNotFoundError(f"predictor rows missing for partition(s) {missing}: materialise those "
                                "'predictors' partitions first")
    raw = pd.concat(frames, ignore_index=True)
    zoos = {f"{d}/{a}" for d, a in profile.zoos()}
    return raw[raw["test_zoo"].isin(zoos)].reset_index(drop=True)


def build_table(table: str, raw, archs: list[str]):
    """The table's cells cut out of the raw rows by the library (`tables_from_raw`: the same rows
    and average rows as `in_distribution` / `cross_dataset` / `cross_architecture`)."""
    from sne_core.protocols import tables_from_raw
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")
    pair = (archs[0], archs[1]) if len(archs) >= 2 else ("arch1", "arch2")
    return tables_from_raw(raw, pair)[table]


def plot_png(table: str, df) -> bytes:
    """Grouped bars of Kendall tau (mean ± std over seeds): the average rows where the table has
    them, else every cell; one bar per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    rows = df[df["train_zoo"] == "average"] if (df["train_zoo"] == "average").any() else df
    cells = list(dict.fromkeys(zip(rows["train_zoo"], rows["test_zoo"])))
    methods = list(dict.fromkeys(rows["method"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(cells) * max(1, len(methods)) / 3), 3.6))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        sub = rows[rows["method"] == m].set_index(["train_zoo", "test_zoo"])
        mean = [float(sub["tau_mean"].get(c, math.nan)) for c in cells]
        std = [float(sub["tau_std"].get(c, math.nan)) for c in cells]
        x = np.arange(len(cells)) + i * width
        ax.bar(x, np.nan_to_num(mean), width, yerr=np.nan_to_num(std), label=m, capsize=2)
    ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2)
    ax.set_xticklabels([t if tr == "average" else f"{tr}\n→{t}" for tr, t in cells], fontsize=7)
    ax.set_ylabel("Kendall tau")
    ax.set_title(table.replace("_", " "))
    ax.axhline(0, color="grey", lw=0.6)
    ax.legend(fontsize=7, ncol=min(4, len(methods)))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _table_asset(table: str):
    @asset(name=f"{table}_table", group_name="results", kinds={"parquet", "mlflow"}, deps=[predictors],
           description=f"The {table.replace('_', '-')} result table: Kendall tau, R² and L1, mean ± std "
                       "over predictor seeds (Parquet in the store; Markdown and plot here).")
    def _materialize(context: AssetExecutionContext, store: StoreResource, profile: RunProfile,
                     mlflow: MLflowTracker) -> MaterializeResult:
        from sne_core.protocols import format_table
        zoo_store = store.get()
        df = build_table(table, load_raw(zoo_store, profile), list(profile.archs))
        markdown = format_table(df)
        png = plot_png(table, df) if len(df) else None
        path = table_path(table)
        zoo_store.write_frame(path, df, metadata={"table": table, "profile": profile.name})
        experiment_id = mlflow.experiment_id(TASK)
        digest = mlflow.run_key(table=table, rows=df.round(10).astype(str).to_csv(index=False))
        run = None if mlflow.new_runs else mlflow.find_run(experiment_id, digest)
        run_id = run.info.run_id if run else log_table_run(
            mlflow, experiment_id, key=digest, table=table, df=df, markdown=markdown, plot_png=png,
            params={f"profile.{k}": v for k, v in profile.fields().items()},
            parquet_uri=f"{store.uri().rstrip('/')}/{path}")
        context.log.info(f"{table}:\n{markdown}")
        meta = {"table": MetadataValue.md(markdown), "rows": len(df), "path": f"{store.uri().rstrip('/')}/{path}",
                "mlflow_parent_run": run_id, "mlflow_run_reused": run is not None}
        if png:
            meta["plot"] = MetadataValue.md(f"![{table}](data:image/png;base64,{base64.b64encode(png).decode()})")
        return MaterializeResult(metadata=meta)
    return _materialize


in_distribution_table = _table_asset("in_distribution")
cross_dataset_table = _table_asset("cross_dataset")
cross_architecture_table = _table_asset("cross_architecture")
TABLE_ASSETS = [in_distribution_table, cross_dataset_table, cross_architecture_table]
TABLE_KEYS = [AssetKey(f"{t}_table") for t in TABLES]
