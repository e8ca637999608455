"""The Dagster definitions: assets, checks, resources, the weekly schedule and the executor.

    dagster dev -w workspace.yaml          # UI on http://127.0.0.1:3000
    python -m pipelines.demo               # everything, in process, with the demo profile

Which profile is the default comes from SNE_PROFILE (smoke | demo | full; demo if unset); any
field can be overridden per run in the launchpad under `resources.profile.config`.
"""
from __future__ import annotations


from dagster import AssetSelection, AutomationCondition, Definitions, define_asset_job, multiprocess_executor

from assets import TABLE_ASSETS, dataset, predictors, splits, zoo
from pipelines.profiles import load_profile
from pipelines.resources import DeviceResource, MLflowTracker, StoreResource
from pipelines.schedules import ZOO_CRON, regenerate_zoos, weekly_zoo_regeneration

# After a scheduled zoo regeneration, predictors and tables follow once every upstream partition
# they read was updated since the tick (see pipelines/schedules.py).
DOWNSTREAM = [predictors, *TABLE_ASSETS]

# One job per stage of the graph (a run covers one partition of its assets); `python -m pipelines.demo`
# runs them in order, partitions in parallel. In the UI, "Materialize all" does the same as a backfill.
datasets_job = define_asset_job("datasets", selection=AssetSelection.assets(dataset))
predictors_job = define_asset_job("train_predictors", selection=AssetSelection.assets(predictors))
tables_job = define_asset_job("result_tables", selection=AssetSelection.assets(*TABLE_ASSETS),
                              description="The three result tables (in parallel processes).")
STAGES = [("datasets", datasets_job), ("zoos", regenerate_zoos), ("predictors", predictors_job),
          ("tables", tables_job)]


def build_definitions(profile_name: str | None = None, **resources) -> Definitions:
    """Definitions with `profile_name`'s run profile; `resources` replace the defaults (tests use a
    temp store and MLflow)."""
    profile = load_profile(profile_name)   # refuses a bad default before anything loads
    downstream = [a.with_attributes(automation_condition=AutomationCondition.on_cron(ZOO_CRON)) for a in DOWNSTREAM]
    return Definitions(
        assets=[dataset, zoo, splits, *downstream],
        jobs=[job for _, job in STAGES],
        schedules=[weekly_zoo_regeneration],
        resources={
            "store": StoreResource(),
            "mlflow": MLflowTracker(),
            "device": DeviceResource(),
            "profile": profile,
            **resources,
        },
        # Independent steps run in parallel processes. Concurrency is run config, not code:
        # `execution: {config: {max_concurrent: N}}` per run (default: the CPU count), and across
        # runs the "sne_training" pool (dagster.yaml `concurrency: pools: default_limit`).
        executor=multiprocess_executor,
    )


defs = build_definitions()
