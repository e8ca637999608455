"""Weekly zoo regeneration: a new zoo seed, then everything downstream.

The schedule requests one run per zoo partition of the active profile, with the zoo seed set
to the tick's date (YYYYMMDD): a fresh draw of hyperparameters, so a new zoo. It is STOPPED
until a user turns it on in the UI (`SNE_ZOO_CRON` changes its cron, default Mondays 03:00).
Predictors and the result tables then follow through Declarative Automation (`on_cron` on the
same cron: they materialise once, after all their upstream partitions were updated since the
tick), which the `dagster dev` daemon evaluates: no extra scheduler.
"""
from __future__ import annotations

import os

from dagster import (AssetSelection, DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext,
                     define_asset_job, schedule)

from assets.partitions import zoo_partition
from pipelines.profiles import RunProfile

ZOO_CRON = os.environ.get("SNE_ZOO_CRON", "0 3 * * 1")

regenerate_zoos = define_asset_job(
    "regenerate_zoos", selection=AssetSelection.assets("zoo", "splits"),
    description="Train (or resume) the zoo partitions and their splits.")


def seed_for(context: ScheduleEvaluationContext) -> int:
    return int(context.scheduled_execution_time.strftime("%Y%m%d"))


@schedule(job=regenerate_zoos, cron_schedule=ZOO_CRON, default_status=DefaultScheduleStatus.STOPPED,
          name="weekly_zoo_regeneration",
          description="Regenerate every zoo of the active profile with a new seed (the tick's date).")
def weekly_zoo_regeneration(context: ScheduleEvaluationContext, profile: RunProfile):
    seed = seed_for(context)
    config = {"resources": {"profile": {"config": {**profile.fields(), "zoo_seed": seed}}}}
    for dataset, arch in profile.zoos():
        yield RunRequest(run_key=f"zoo-seed-{seed}-{dataset}-{arch}",
                         partition_key=zoo_partition(dataset, arch), run_config=config,
                         tags={"sne/zoo_seed": str(seed), "sne/profile": profile.name})
