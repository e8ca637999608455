"""predictors: one method trained on one zoo, seeds inside, scored on every zoo of the profile.

A partition is (method, training zoo). A run may cover a range of partitions (the backfill
policy: one method on every training zoo per run), so a backfill or `make demo` pays Dagster's
run start-up once per method instead of once per partition; each partition is still trained,
stored and logged on its own.

Each seed is one MLflow run (params, per-epoch validation tau, test metrics per target zoo,
scatter, config, checkpoint). The raw per-seed rows (`sne_core.protocols.evaluate`) go to the
store as `predictions/method=<m>/train_zoo=<dataset>-<arch>.parquet`; the result tables read
them, so no predictor is trained twice for three tables.

Resumable: each finished fit (one per seed, or per ensemble member) is saved under the store resource's local
`work_dir` as `predictors/<method>/<dataset>-<arch>/<key>/seed<N>/` until the partition's rows are written, so a
retry of an interrupted partition trains only what it had not finished (and then logs every seed to MLflow).
Writing the rows removes the partition's whole folder, the fits of settings given up on (other keys) too: a fit
is kept to finish an interrupted run, and once the partition has rows the run it belonged to is not resumed.

Idempotent: the rows carry a content key (method, training config, the library's defaults for the
method, zoo fingerprints). When the stored rows have the same key and their MLflow runs exist, the
partition is not retrained and nothing new is logged (set the tracker's `new_runs` to force fresh runs).
"""

import functools
import hashlib
import shutil
from pathlib import Path

from dagster import (AllPartitionMapping, AssetDep, AssetExecutionContext, BackfillPolicy, MaterializeResult,
                     MetadataValue, asset)

from assets.partitions import PREDICTORS_PER_RUN, predictor_partitions, zoo_from_key
from assets.zoo import splits
from pipelines.mlflow_tracking import TASK, log_seed_run
from pipelines.profiles import RunProfile
from pipelines.resources import DeviceResource, MLflowTracker, StoreResource


def predictions_path(method: str, dataset: str, arch: str) -> str:
    return f"predictions/method={method}/train_zoo={dataset}-{arch}.parquet"


def zoo_fingerprint(zoo_store, dataset: str, arch: str, split_seed: int) -> str:
    """Changes whenever the zoo's networks or their accuracies change (e.g. a regenerated zoo)."""
    models = zoo_store.read_models(dataset, arch)
    final = models[models["is_final"].astype(bool)].sort_values("model_id")
    text = final[["model_id", "zoo_seed", "status", "test_acc"]].to_csv(index=False) + f"split={split_seed}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _stored_rows(zoo_store, path: str):
    try:
        return zoo_store.read_frame(path)
    except FileNotFoundError:
        return None


@asset(partitions_def=predictor_partitions, group_name="predictors", kinds={"pytorch", "mlflow", "parquet"},
       pool="sne_training", deps=[AssetDep(splits, partition_mapping=AllPartitionMapping())],
       backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=PREDICTORS_PER_RUN),
       description="A predictor (SNE or a baseline) trained on one zoo's train split for each seed, "
                   "selected on its val split, scored on the test split of every zoo in the profile.")
def predictors(context: AssetExecutionContext, store: StoreResource, profile: RunProfile,
               device: DeviceResource, mlflow: MLflowTracker) -> MaterializeResult:
    # What every partition of a range run shares is computed once: the store, the device, the
    # MLflow experiment and each zoo's fingerprint (a read of its models table).
    zoo_store = store.get()
    fingerprint = functools.cache(lambda zoo: zoo_fingerprint(zoo_store, *zoo.split("/"), profile.split_seed))
    shared = dict(zoo_store=zoo_store, fingerprint=fingerprint, device=device.resolve(),
                  experiment_id=mlflow.experiment_id(TASK), work=store.work_path() / "predictors")
    # a range run materialises every partition in it with this one result: the metadata keeps
    # each partition's numbers under its key
    per_key = {str(k): train_partition(context, k, profile, mlflow, **shared) for k in context.partition_keys}
    if len(per_key) == 1:
        return MaterializeResult(metadata=next(iter(per_key.values())))
    lines = ["| partition | in-distribution tau | reused | rows |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {m['in_distribution_tau_mean']:.3f} | {m['reused']} | {m['rows']} |" for k, m in per_key.items()]
    return MaterializeResult(metadata={"partitions": MetadataValue.md("\n".join(lines)),
                                       "rows": sum(m["rows"] for m in per_key.values()),
                                       "reused": all(m["reused"] for m in per_key.values())})


def train_partition(context: AssetExecutionContext, partition_key, profile: RunProfile, mlflow: MLflowTracker, *,
                    zoo_store, fingerprint, device: str, experiment_id: str, work: Path) -> dict:
    """Train (or reuse) one (method, training zoo) partition; returns its metadata."""
    from sne_core.methods import defaults_fingerprint
    from sne_core.protocols import evaluate
    from sne_core.train import TrainConfig
    keys = predictor_partitions.get_partition_key_from_str(str(partition_key)).keys_by_dimension
    method, (dataset, arch) = keys["method"], zoo_from_key(keys["train_zoo"])
    train_zoo = f"{dataset}/{arch}"
    targets = [f"{d}/{a}" for d, a in profile.zoos()]
    if train_zoo not in targets:
        targets.insert(0, train_zoo)
    config = TrainConfig(method=method, epochs=profile.predictor_epochs, batch_size=profile.predictor_batch_size,
                         lr=profile.predictor_lr, patience=profile.predictor_patience, device=device,
                         train_checkpoints=profile.predictor_train_checkpoints, hyper=profile.hyper(method),
                         **profile.train_settings(method))
    fingerprints = {z: fingerprint(z) for z in targets}
    # what the library decides where the profile is silent (registry entry, SNEConfig, TrainConfig defaults):
    # in the key, so rows trained before a library default changed are trained again, not reused
    library = defaults_fingerprint(method)
    params = {**{f"profile.{k}": v for k, v in profile.fields().items()},
              **{f"train.{k}": v for k, v in config.as_dict().items()},
              **{f"zoo_fingerprint.{z}": f for z, f in fingerprints.items()},
              "library_defaults": library}
    key = mlflow.run_key(method=method, train_zoo=train_zoo, targets=targets, train=config.as_dict(),
                         split_seed=profile.split_seed, zoos=fingerprints, seeds=profile.seeds(), library=library)
    path = predictions_path(method, dataset, arch)

    old = _stored_rows(zoo_store, path)
    if old is not None and not mlflow.new_runs and _reusable(old, key, mlflow, experiment_id):
        context.log.info(f"{method} @ {train_zoo}: stored rows and MLflow runs match key {key}; not retrained")
        return _metadata(old, path, key, reused=True)

    partition_work = work / method / f"{dataset}-{arch}"
    fits, kept = {}, partition_work / key           # the key names every setting, so no stale fit is found
    raw = evaluate(method, zoo_store, train_zoo, targets, profile.seeds(), config, profile.split_seed,
                   on_fit=lambda seed, result, preds: fits.__setitem__(seed, (result, preds)), keep_fits=kept)
    raw["key"] = key
    raw["mlflow_run_id"] = ""
    for seed, (result, preds) in fits.items():
        rows = raw[raw["seed"] == seed]
        run_id = log_seed_run(mlflow, experiment_id, key=f"{key}:seed{seed}", method=method, train_zoo=train_zoo,
                              seed=seed, params=params, fit_result=result, rows=rows, predictions=preds,
                              tags={"profile": profile.name})
        raw.loc[raw["seed"] == seed, "mlflow_run_id"] = run_id
        own = rows[rows["test_zoo"] == train_zoo]
        context.log.info(f"{method} @ {train_zoo} seed {seed}: best epoch {result.best_epoch}, "
                         f"val tau {result.val.get('tau', float('nan')):.3f}, "
                         f"test tau {float(own['tau'].iloc[0]) if len(own) else float('nan'):.3f} (run {run_id})")
    zoo_store.write_frame(path, raw, metadata={"key": key, "method": method, "train_zoo": train_zoo})
    shutil.rmtree(partition_work, ignore_errors=True)    # in the rows and MLflow now; other keys' fits are stale
    return _metadata(raw, path, key, reused=False)


def _reusable(old, key: str, mlflow: MLflowTracker, experiment_id: str) -> bool:
    if "key" not in old.columns or set(old["key"]) != {key}:
        return False
    run_ids = {r for r in old["mlflow_run_id"].fillna("") if r}
    notes = old["note"].fillna("").astype(str)
    if not run_ids and not notes.str.startswith("n/a").all():
        return False
    client = mlflow.client()
    try:
        return all(client.get_run(r).info.status == "FINISHED" for r in run_ids)
    except Exception:  # a run deleted in the MLflow UI: retrain and log again
        return False


def _metadata(raw, path: str, key: str, reused: bool) -> dict:
    import math
    notes = [n for n in raw["note"].fillna("").astype(str) if n]
    own = raw[raw["train_zoo"] == raw["test_zoo"]]
    tau = own["tau"].astype(float)
    return {
        "path": path, "key": key, "reused": reused, "rows": len(raw), "seeds": int(raw["seed"].nunique()),
        "in_distribution_tau_mean": float(tau.mean()) if tau.notna().any() else math.nan,
        "note": notes[0] if notes else "",
        "mlflow_runs": MetadataValue.text(", ".join(sorted({r for r in raw["mlflow_run_id"] if r})) or "none"),
    }
