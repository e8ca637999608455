"""What the pipeline logs to MLflow.

- One experiment per task (`<prefix>/<task>`; the task here is "accuracy-prediction": predict a
  network's test accuracy from its weights. Another target would be another experiment).
- One run per method x training zoo x seed: every config field as a param, validation tau per
  epoch (step = epoch), final test tau / R² / L1 per target zoo, and artifacts: a
  predicted-vs-true scatter PNG, the config JSON and the predictor checkpoint.
- One parent run per result table with one child run per method, whose metrics are the table's
  cells: the MLflow runs view then lists methods side by side, one column per cell.

Runs carry a content key (tag `sne.key`): materialising twice finds the earlier run instead of
logging a duplicate, unless the tracker's `new_runs` is set.
"""
from __future__ import annotations

import io
import json
import pickle

import numpy as np

TASK = "accuracy-prediction"


def metric_name(*parts: str) -> str:
    """MLflow metric names allow [A-Za-z0-9_-. /]; zoo names use '/', which MLflow groups by."""
    return "/".join(p.replace(":", "_").replace(">", "") for p in parts)


# ---- artifacts ---------------------------------------------------------------------------------
def scatter_png(predictions: dict, title: str) -> bytes:
    """Predicted vs true test accuracy, one colour per target zoo, on one axes (one figure with
    a panel per zoo costs seconds per run in matplotlib's layout; this costs a fraction)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_axes((0.14, 0.12, 0.82, 0.8))
    lo = 1.0
    for zoo, (_, y_true, y_pred) in predictions.items():
        ax.scatter(y_true, y_pred, s=12, alpha=0.7, label=zoo)
        lo = min(lo, float(np.min(y_true)), float(np.min(y_pred)))
    ax.plot([lo, 1], [lo, 1], lw=0.8, color="grey")
    ax.set_xlabel("true test accuracy")
    ax.set_ylabel("predicted test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def checkpoint_bytes(model) -> tuple[str, bytes]:
    """A torch predictor's state dict (.pt), or a pickled non-torch predictor (GBM)."""
    import torch
    buf = io.BytesIO()
    if isinstance(model, torch.nn.Module):
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        return "predictor.pt", buf.getvalue()
    pickle.dump(model, buf)
    return "predictor.pkl", buf.getvalue()


# ---- per-seed runs ------------------------------------------------------------------------------
def log_seed_run(tracker, experiment_id: str, *, key: str, method: str, train_zoo: str, seed: int,
                 params: dict, fit_result, rows, predictions: dict, tags: dict | None = None) -> str:
    """One run for one trained predictor; `rows` are its raw protocol rows (one per target zoo)."""
    run = tracker.start_run(experiment_id, f"{method} @ {train_zoo} seed {seed}", key,
                            tags={"method": method, "train_zoo": train_zoo, "seed": seed, **(tags or {})})
    run_id = run.info.run_id
    try:
        tracker.log_params(run_id, {**params, "method": method, "train_zoo": train_zoo, "seed": seed})
        for h in fit_result.history:   # per-epoch validation (and training) metrics
            tracker.log_metrics(run_id, {k: v for k, v in h.items() if k != "epoch"}, step=int(h["epoch"]))
        final = {"best_epoch": fit_result.best_epoch, "epochs_run": fit_result.epochs_run,
                 "fit_seconds": fit_result.seconds}
        for r in rows.itertuples(index=False):
            for m in ("tau", "r2", "l1"):
                final[metric_name("test", m, r.test_zoo)] = getattr(r, m)
        tracker.log_metrics(run_id, final)
        if predictions:
            tracker.log_artifact_bytes(run_id, "pred_vs_true.png",
                                       scatter_png(predictions, f"{method} trained on {train_zoo}, seed {seed}"))
        tracker.log_artifact_bytes(run_id, "config.json",
                                   json.dumps({**params, "method": method, "train_zoo": train_zoo, "seed": seed},
                                              indent=2, sort_keys=True, default=str).encode())
        name, blob = checkpoint_bytes(fit_result.model)
        tracker.log_artifact_bytes(run_id, name, blob)
    except BaseException:
        tracker.finish(run_id, "FAILED")
        raise
    tracker.finish(run_id)
    return run_id


# ---- result tables ------------------------------------------------------------------------------
def log_table_run(tracker, experiment_id: str, *, key: str, table: str, df, markdown: str,
                  plot_png: bytes | None, params: dict, parquet_uri: str) -> str:
    """A parent run for one result table and one child run per method (metrics = the cells)."""
    parent = tracker.start_run(experiment_id, f"table: {table}", key, tags={"table": table, "sne.kind": "table"})
    pid = parent.info.run_id
    try:
        tracker.log_params(pid, {**params, "table": table, "parquet": parquet_uri})
        tracker.log_artifact_bytes(pid, f"{table}.md", markdown.encode())
        if plot_png:
            tracker.log_artifact_bytes(pid, f"{table}.png", plot_png)
        for method, g in df.groupby("method", sort=False):
            child = tracker.start_run(experiment_id, f"{table}: {method}", f"{key}:{method}",
                                      tags={"table": table, "method": method, "sne.kind": "table-row"},
                                      parent_run_id=pid)
            metrics = {}
            for r in g.itertuples(index=False):
                cell = f"{r.train_zoo}->{r.test_zoo}"
                metrics[metric_name("tau", cell)] = r.tau_mean
                metrics[metric_name("r2", cell)] = r.r2_mean
                metrics[metric_name("l1", cell)] = r.l1_mean
            finite = g["tau_mean"].to_numpy(np.float64)
            finite = finite[np.isfinite(finite)]
            if finite.size:
                metrics["tau_mean_over_cells"] = float(finite.mean())
            tracker.log_params(child.info.run_id, {"method": method, "table": table})
            tracker.log_metrics(child.info.run_id, metrics)
            tracker.finish(child.info.run_id)
    except BaseException:
        tracker.finish(pid, "FAILED")
        raise
    tracker.finish(pid)
    return pid
