"""Materialise the whole graph with one profile, then print the three result tables.

    python -m pipelines.demo                    # demo profile (make demo)
    python -m pipelines.demo --profile smoke    # seconds
    python -m pipelines.demo --in-process       # one process, no executor (debugging)

Stages run in order (datasets -> zoos+splits -> predictors -> tables), each as Dagster runs on
the persistent instance in data/dagster (so `dagster dev` shows them afterwards), executed by
Dagster's multiprocess executor; up to `--concurrency` runs go at once. A run covers what the
asset's backfill policy would give it: all datasets in one run, one zoo per run (its checks are
per zoo), one method on every training zoo per predictors run. Nothing here schedules work Dagster could not: on a cluster the same jobs are
launched by the Kubernetes or Celery executor (docs/PIPELINE.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from pipelines.profiles import ConfigError, load_profile
from pipelines.resources import PROJECT_ROOT, data_dir


def stage_job(job_name: str):
    """Module-level reconstructor: the run and step processes rebuild the job from the definitions."""
    from pipelines.definitions import defs
    return defs.resolve_job_def(job_name)


def partition_keys(stage: str, profile) -> list:
    from assets.partitions import predictor_partition, zoo_partition
    if stage == "datasets":
        return list(profile.datasets)
    if stage == "zoos":
        return [zoo_partition(d, a) for d, a in profile.zoos()]
    if stage == "predictors":
        return [predictor_partition(m, d, a) for d, a in profile.zoos() for m in profile.methods]
    return [None]


def stage_runs(stage: str, profile) -> list:
    """The stage's Dagster runs: each a list of partition keys (a contiguous range, as the asset's
    backfill policy would launch them) or None for the unpartitioned tables. A zoo run is one
    partition, so its checks speak for one zoo."""
    from assets.partitions import PREDICTORS_PER_RUN, dataset_partitions, predictor_partitions, run_groups
    keys = partition_keys(stage, profile)
    if stage == "datasets":
        return run_groups(dataset_partitions, keys, len(keys))
    if stage == "predictors":
        return run_groups(predictor_partitions, keys, PREDICTORS_PER_RUN)
    return [None if k is None else [k] for k in keys]


def run_tags(job_def, keys) -> dict:
    from assets.partitions import range_tags
    if keys is None:
        return {}
    if len(keys) == 1:
        return dict(job_def.get_tags_for_partition_key(str(keys[0]), None))
    return range_tags(keys)


def _label(keys) -> str:
    if keys is None:
        return "all"
    first = keys[0]
    text = " ".join(f"{k}={v}" for k, v in sorted(first.keys_by_dimension.items())) \
        if hasattr(first, "keys_by_dimension") else str(first)
    return text if len(keys) == 1 else f"{text} +{len(keys) - 1} more"


def _run_partitions(job_name: str, keys, max_concurrent: int) -> tuple[bool, str, float]:
    """One Dagster run over `keys` (a worker process: execute_job wants the main thread of its process)."""
    from dagster import DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import build_reconstructable_job
    t0 = time.time()
    job = build_reconstructable_job("pipelines.demo", "stage_job", reconstructable_kwargs={"job_name": job_name},
                                    reconstructor_working_directory=str(PROJECT_ROOT))
    tags = run_tags(stage_job(job_name), keys)
    # the console gets warnings only (progress is printed per run); every event and log line is
    # still in the instance, where `dagster dev` shows it
    # forkserver with the heavy modules preloaded: a step process forks ready to go instead of
    # importing torch and Dagster again (seconds per run on a small machine)
    start = {"forkserver": {"preload_modules": ["dagster", "torch", "pipelines.definitions", "sne_core.protocols"]}}
    run_config = {"execution": {"config": {"max_concurrent": max_concurrent, "start_method": start}},
                  "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with DagsterInstance.get() as instance:
        result = execute_job(job, instance, run_config=run_config, tags=tags)
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        bad_checks = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
        msg = f"run {result.run_id[:8]}" + (f", failed steps {failed}" if failed else "") + \
              (f", failed checks {bad_checks}" if bad_checks else "")
        return result.success and not bad_checks, msg, time.time() - t0


def run_multiprocess(profile, concurrency: int) -> bool:
    from pipelines.definitions import STAGES
    ctx = get_context("spawn")
    for stage, job in STAGES:
        runs = stage_runs(stage, profile)
        t0, done, ok_all = time.time(), 0, True
        n_keys = sum(len(r) for r in runs if r is not None)
        print(f"\n== {stage}: {len(runs)} run(s) for {n_keys or 1} partition(s), {concurrency} at a time", flush=True)
        with ProcessPoolExecutor(max_workers=min(concurrency, len(runs)), mp_context=ctx) as pool:
            # one run at a time per worker; the unpartitioned tables run as parallel steps of one run
            futures = {pool.submit(_run_partitions, job.name, r, 1 if r is not None else concurrency): r
                       for r in runs}
            try:
                for fut in as_completed(futures):
                    done += 1
                    ok, msg, secs = fut.result()
                    ok_all &= ok
                    print(f"   [{done}/{len(runs)}] {_label(futures[fut]):<48} {'ok' if ok else 'FAILED'}"
                          f"  {secs:6.1f} s  ({msg})", flush=True)
            except KeyboardInterrupt:   # Ctrl-C: the running runs get it too; queued ones never start
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        print(f"   {stage} done in {time.time() - t0:.0f} s", flush=True)
        if not ok_all:
            print(f"stage {stage} failed; see `dagster dev -w workspace.yaml` for the run logs", file=sys.stderr)
            return False
    return True


def run_in_process(defs, profile, instance=None, log=print) -> bool:
    """Every stage with execute_in_process (one process): what the tests use."""
    from pipelines.definitions import STAGES
    for stage, job in STAGES:
        job_def = defs.resolve_job_def(job.name)
        for keys in stage_runs(stage, profile):
            t0 = time.time()
            result = job_def.execute_in_process(tags=run_tags(job_def, keys), instance=instance, raise_on_error=False)
            bad = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
            log(f"{stage:<10} {_label(keys):<48} {'ok' if result.success and not bad else 'FAILED'} "
                f"{time.time() - t0:6.1f} s" + (f" failed checks {bad}" if bad else ""))
            if not result.success or bad:
                return False
    return True


def print_tables(store_uri: str) -> None:
    from assets.tables import TABLES, table_path
    from sne_core.protocols import format_table
    from sne_core.store import ZooStore
    zs = ZooStore(store_uri)
    for t in TABLES:
        print(f"\n### {t.replace('_', '-')} (Kendall tau, R², L1: mean ± std over seeds)\n")
        print(format_table(zs.read_frame(table_path(t))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=os.environ.get("SNE_PROFILE", "demo"), help="smoke | demo | full")
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("SNE_MAX_CONCURRENT", "2")),
                    help="Dagster runs (partitions) at once; default 2 (the demo machine's cores)")
    ap.add_argument("--in-process", action="store_true", help="run every stage in this process")
    args = ap.parse_args(argv)
    try:   # refuse a bad configuration before any work starts
        profile = load_profile(args.profile)
        if args.concurrency < 1:
            raise ConfigError(f"field 'concurrency' must be >= 1, got {args.concurrency}")
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    os.environ["SNE_PROFILE"] = profile.name
    # Each run process trains on its share of the cores (torch would otherwise oversubscribe them).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.concurrency)))
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    yaml = home / "dagster.yaml"
    if not yaml.exists():   # pools bound the heavy steps across runs, also under `dagster dev`
        yaml.write_text(f"concurrency:\n  pools:\n    default_limit: {args.concurrency}\n"
                        "telemetry:\n  enabled: false\n")

    from pipelines.definitions import defs
    from pipelines.mlflow_tracking import TASK
    store, tracker = defs.resources["store"], defs.resources["mlflow"]
    tracker.experiment_id(TASK)   # create the MLflow database once, before parallel runs touch it
    print(f"SNE pipeline, profile {profile.name!r}: {len(profile.zoos())} zoos x {profile.n_models} networks, "
          f"{len(profile.methods)} methods x {profile.predictor_seeds} seeds\n  store  {store.uri()}\n"
          f"  mlflow {tracker.uri()}\n  dagster instance {home}", flush=True)
    t0 = time.time()
    if args.in_process:
        from dagster import DagsterInstance
        with DagsterInstance.get() as instance:
            ok = run_in_process(defs, profile, instance)
    else:
        from dagster import DagsterInstance
        with DagsterInstance.get():   # create the instance's sqlite schemas once, before parallel runs
            pass
        ok = run_multiprocess(profile, args.concurrency)
    if not ok:
        return 1
    print(f"\nWhole graph materialised in {time.time() - t0:.0f} s.")
    print_tables(store.uri())
    db = tracker.uri()
    print(f"""
Open the results:
  Dagster:  DAGSTER_HOME={home} {sys.executable.replace(str(PROJECT_ROOT) + '/', '')} -m dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
            then http://127.0.0.1:3000 (asset graph, runs, table metadata and plots)
  MLflow:   {Path(sys.executable).parent.relative_to(PROJECT_ROOT) if Path(sys.executable).is_relative_to(PROJECT_ROOT) else Path(sys.executable).parent}/mlflow ui --backend-store-uri {db} -h 127.0.0.1 -p 5000
            then http://127.0.0.1:5000 (experiment {tracker.experiment_name(TASK)!r})""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
