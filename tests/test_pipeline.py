"""The Dagster pipeline end to end, with the smoke profile, a temp store and a temp MLflow:
the whole graph materialises, MLflow holds the runs, a second materialisation duplicates
nothing, the zoo checks fail bad zoos, the schedule's run requests are valid, and a bad
configuration value is refused before any work starts."""
from __future__ import annotations

import json
import math
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dagster import AssetKey, DagsterInstance, DefaultScheduleStatus, build_schedule_context, validate_run_config

from assets.partitions import predictor_partition, zoo_partition, zoo_partitions
from assets.predictors import predictions_path
from assets.tables import TABLES, table_path
from pipelines.definitions import build_definitions
from pipelines.demo import partition_keys, run_in_process, stage_runs
from pipelines.mlflow_tracking import TASK
from pipelines.profiles import ConfigError, load_profile
from pipelines.resources import DeviceResource, MLflowTracker, StoreResource
from sne_core.store import ZooStore

ROOT = Path(__file__).resolve().parents[1]
DATASETS_ROOT = ROOT / "data" / "datasets"


def make_defs(tmp: Path, profile=None, tracker: MLflowTracker | None = None):
    resources = dict(store=StoreResource(root=str(tmp / "store"), datasets_root=str(DATASETS_ROOT),
                                         work_dir=str(tmp / "work")),
                     mlflow=tracker or MLflowTracker(tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                                                     artifact_root=(tmp / "artifacts").as_uri()),
                     device=DeviceResource(device="cpu"))
    if profile is not None:
        resources["profile"] = profile
    return build_definitions("smoke", **resources)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole graph, materialised once in process with the smoke profile."""
    tmp = tmp_path_factory.mktemp("pipeline")
    old_home = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(tmp / "dagster")
    (tmp / "dagster").mkdir()
    defs = make_defs(tmp)
    profile = load_profile("smoke")
    lines: list[str] = []
    with DagsterInstance.ephemeral() as instance:
        ok = run_in_process(defs, profile, instance, log=lines.append)
        yield dict(tmp=tmp, defs=defs, profile=profile, instance=instance, ok=ok, log=lines,
                   store=ZooStore(tmp / "store"), tracker=defs.resources["mlflow"])
    if old_home is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = old_home


def _runs(tracker, filter_string=""):
    exp = tracker.experiment_id(TASK)
    return tracker.client().search_runs([exp], filter_string=filter_string, max_results=5000)


def test_whole_graph_materialises(smoke):
    assert smoke["ok"], "\n".join(smoke["log"])
    profile, store, instance = smoke["profile"], smoke["store"], smoke["instance"]
    # every run of every stage ran, in graph order; predictors in ranges (one method per run)
    runs = {s: stage_runs(s, profile) for s in ("datasets", "zoos", "predictors", "tables")}
    assert len(smoke["log"]) == sum(len(r) for r in runs.values())
    assert len(runs["predictors"]) < len(partition_keys("predictors", profile))
    assert sorted(str(k) for r in runs["predictors"] for k in r) == \
        sorted(str(k) for k in partition_keys("predictors", profile))
    assert sorted(store.zoos()) == sorted(profile.zoos())
    zoos = [f"{d}/{a}" for d, a in profile.zoos()]
    for table in TABLES:
        df = store.read_frame(table_path(table))
        assert {"method", "train_zoo", "test_zoo", "tau_mean", "tau_std", "r2_mean", "l1_mean", "seeds"} <= set(df.columns)
        assert set(df["method"]) == set(profile.methods)
        assert not df.duplicated(["method", "train_zoo", "test_zoo"]).any()
        event = instance.get_latest_materialization_event(AssetKey(f"{table}_table"))
        meta = event.asset_materialization.metadata
        assert meta["table"].value.startswith("| method |") and meta["rows"].value == len(df)
        assert "data:image/png;base64," in meta["plot"].value
    ind = store.read_frame(table_path("in_distribution"))
    assert len(ind) == len(profile.methods) * len(zoos)
    assert (ind["train_zoo"] == ind["test_zoo"]).all()
    # SNE reads every architecture: every in-distribution cell has a score, from every seed
    sne = ind[ind["method"] == "sne"]
    assert np.isfinite(sne["l1_mean"]).all() and (sne["seeds"] <= profile.predictor_seeds).all()
    for d, a in profile.zoos():
        raw = store.read_frame(predictions_path("sne", d, a))
        assert sorted(raw.loc[raw["test_zoo"] == f"{d}/{a}", "seed"]) == profile.seeds()
    # NFN cannot read arch2 (flatten -> linear): n/a with its reason, never a number
    nfn_arch2 = ind[(ind["method"] == "nfn_np") & ind["train_zoo"].str.endswith("arch2")]
    assert len(nfn_arch2) and nfn_arch2["note"].str.startswith("n/a").all() and nfn_arch2["tau_mean"].isna().all()
    xd = store.read_frame(table_path("cross_dataset"))
    assert {"arch1", "arch2"} <= set(xd.loc[xd["train_zoo"] == "average", "test_zoo"])
    xa = store.read_frame(table_path("cross_architecture"))
    assert {"arch1->arch2", "arch2->arch1"} <= set(xa.loc[xa["train_zoo"] == "average", "test_zoo"])


def test_mlflow_runs_have_the_expected_metrics(smoke):
    tracker, profile = smoke["tracker"], smoke["profile"]
    zoos = [f"{d}/{a}" for d, a in profile.zoos()]
    runs = _runs(tracker, "tags.method = 'sne' and tags.seed != ''")
    # one run per training zoo x seed for SNE
    assert sorted((r.data.tags["train_zoo"], int(r.data.tags["seed"])) for r in runs) == \
        sorted((z, s) for z in zoos for s in profile.seeds())
    client = tracker.client()
    run = next(r for r in runs if r.data.tags["train_zoo"] == "digits/arch1" and r.data.tags["seed"] == "0")
    # every config field as a param
    for field in profile.fields():
        assert f"profile.{field}" in run.data.params
    assert run.data.params["train.method"] == "sne"
    for k, v in profile.train_settings("sne").items():    # the profile's settings reach SNE's TrainConfig
        assert run.data.params[f"train.{k}"] == json.dumps(v)    # None: "null", the method's default
    # final test metrics per target zoo, and the per-epoch validation history
    for z in zoos:
        for m in ("tau", "r2", "l1"):
            assert f"test/{m}/{z}" in run.data.metrics    # NaN where tau is undefined (ties), logged as such
        assert math.isfinite(run.data.metrics[f"test/l1/{z}"])
    history = client.get_metric_history(run.info.run_id, "val_tau")
    assert [h.step for h in history] == list(range(int(run.data.metrics["epochs_run"])))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pred_vs_true.png", "config.json", "predictor.pt"} <= artifacts
    assert "predictor.pkl" in {a.path for a in client.list_artifacts(
        _runs(tracker, "tags.method = 'gbm' and tags.seed = '0'")[0].info.run_id)}
    # one parent run per table, one child per method: the side-by-side comparison
    parents = _runs(tracker, "tags.`sne.kind` = 'table'")
    assert sorted(p.data.tags["table"] for p in parents) == sorted(TABLES)
    for p in parents:
        children = _runs(tracker, f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        assert sorted(c.data.tags["method"] for c in children) == sorted(profile.methods)
        assert any(k.startswith("tau/") for c in children for k in c.data.metrics)


def _counts(smoke):
    store, profile = smoke["store"], smoke["profile"]
    rows = sum(len(store.read_frame(predictions_path(m, d, a))) for m in profile.methods for d, a in profile.zoos())
    tables = {t: len(store.read_frame(table_path(t))) for t in TABLES}
    models = len(store.read_models())
    return rows, tables, models, len(_runs(smoke["tracker"]))


def test_materialising_twice_is_idempotent(smoke):
    before = _counts(smoke)
    lines: list[str] = []
    assert run_in_process(smoke["defs"], smoke["profile"], smoke["instance"], log=lines.append), "\n".join(lines)
    assert _counts(smoke) == before    # no duplicate rows, networks or MLflow runs
    event = smoke["instance"].get_latest_materialization_event(AssetKey("predictors"))
    assert event.asset_materialization.metadata["reused"].value is True
    zoo_event = smoke["instance"].get_latest_materialization_event(AssetKey("zoo"))
    assert zoo_event.asset_materialization.metadata["trained_now"].value == 0


def test_new_runs_only_when_asked(smoke):
    tmp = smoke["tmp"]
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=(tmp / "artifacts").as_uri(),
                            new_runs=True)
    defs = make_defs(tmp, tracker=tracker)
    rows, _, _, runs = _counts(smoke)
    job = defs.resolve_job_def("train_predictors")
    result = job.execute_in_process(partition_key=str(predictor_partition("gbm", "digits", "arch1")),
                                    instance=smoke["instance"])
    assert result.success
    rows2, _, _, runs2 = _counts(smoke)
    assert rows2 == rows                                       # the partition's rows are replaced, not appended
    assert runs2 == runs + smoke["profile"].predictor_seeds    # one fresh run per seed, as asked


def test_an_interrupted_partition_resumes_at_the_fit_it_had_not_finished(smoke, monkeypatch):
    """A predictor run stopped at its second seed: the retry loads the first seed's kept fit instead of training
    it again, trains the rest, logs every seed to MLflow, and leaves no kept fit of the partition behind, not even
    one of settings given up on; another partition's kept fits stay."""
    from sne_core import protocols
    tmp, instance, seeds = smoke["tmp"], smoke["instance"], smoke["profile"].seeds()
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=(tmp / "artifacts").as_uri(),
                            new_runs=True)                    # stored rows exist: train the partition again
    job = make_defs(tmp, tracker=tracker).resolve_job_def("train_predictors")
    partition = str(predictor_partition("sne", "digits", "arch1"))
    real_fit, fits = protocols.fit, []

    def fit_until_seed(stop):
        def spy(config, train, val, log=None, **kept):
            if config.seed == stop:
                raise RuntimeError(f"stopped at seed {stop}")
            fits.append((config.seed, real_fit(config, train, val, log, **kept)))
            return fits[-1][1]
        return spy

    monkeypatch.setattr(protocols, "fit", fit_until_seed(1))
    assert not job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False).success
    (kept,) = (tmp / "work" / "predictors" / "sne" / "digits-arch1").iterdir()
    assert [p.relative_to(kept).as_posix() for p in kept.rglob("*.pt")] == ["seed0/fit-sne-seed0.pt"]
    stale, other = kept.with_name("0ld5e771n65"), tmp / "work" / "predictors" / "sne" / "mnist-arch1" / "0ld5e771n65"
    for folder in (stale, other):      # an earlier setting's fit of this partition, an unfinished other partition
        shutil.copytree(kept, folder)
    first, runs = fits.pop()[1], len(_runs(tracker))
    monkeypatch.setattr(protocols, "fit", fit_until_seed(None))
    assert job.execute_in_process(partition_key=partition, instance=instance).success
    again = dict(fits)
    assert sorted(again) == seeds
    assert again[0].seconds == first.seconds                           # loaded with its time: not trained again
    assert pd.DataFrame(again[0].history).equals(pd.DataFrame(first.history))   # (equals: NaN tau where ties)
    rows = smoke["store"].read_frame(predictions_path("sne", "digits", "arch1"))
    assert set(rows.loc[rows["seed"] == 0, "fit_seconds"]) == {first.seconds}
    assert len(_runs(tracker)) == runs + len(seeds)
    assert not kept.parent.exists() and (other / "seed0" / "fit-sne-seed0.pt").is_file()


# ---------------------------------------------------------------- checks on broken zoos

def write_synthetic_zoo(store: ZooStore, dataset: str, arch_name: str, n: int, *, acc=None, nan_ids=(),
                        diverged_ids=(), protocol=None):
    """A zoo whose contents we choose: real architectures and store, weights from the init."""
    from sne_core.archs import build_model, get_arch
    from sne_core.hparams import sample_hparams
    from sne_core.records import Checkpoint, NetworkResult
    arch = get_arch(arch_name)
    acc = acc or (lambda i: 0.3 + 0.08 * i)
    results = []
    for h in sample_hparams(0, n, arch.spec.bias_init):
        torch.manual_seed(h.seed)
        state = {k: v.detach().clone() for k, v in build_model(arch, h.activation, h.dropout).state_dict().items()}
        final = {k: v.clone() for k, v in state.items()}
        if h.model_id in nan_ids:
            final[arch.layout[0].name][0] = float("nan")
        diverged = h.model_id in diverged_ids
        a = float("nan") if diverged else acc(h.model_id)
        results.append(NetworkResult(h, "diverged" if diverged else "ok", 1 if diverged else None,
                                     [Checkpoint(0, 0.1, 2.3, 0.1, 2.3, state), Checkpoint(1, a, 1.0, a, 1.0, final)]))
    store.write_networks(dataset, arch, results, zoo_seed=0, protocol=protocol)


def _check_zoo(tmp: Path, **zoo_kwargs):
    write_synthetic_zoo(ZooStore(tmp / "store"), "digits", "arch1", 8, **zoo_kwargs)
    return _materialise_zoo(tmp)


def _materialise_zoo(tmp: Path, n_models: int = 8):
    profile = load_profile("smoke", n_models=n_models, max_diverged_frac=0.5, min_acc_spread=0.05)
    defs = make_defs(tmp, profile=profile)
    job = defs.resolve_job_def("regenerate_zoos")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=str(zoo_partition("digits", "arch1")), instance=instance,
                                        raise_on_error=False)
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        split_done = instance.get_latest_materialization_event(AssetKey("splits")) is not None
    return result, checks, split_done


def test_checks_pass_on_a_healthy_zoo(tmp_path):
    result, checks, split_done = _check_zoo(tmp_path)
    assert result.success and all(checks.values()) and len(checks) == 4, checks
    assert split_done


@pytest.mark.parametrize("broken, failing", [
    (dict(nan_ids=(2,)), "zoo_weights_finite"),
    (dict(diverged_ids=(0, 1, 2, 3, 4)), "zoo_not_diverged"),
    (dict(acc=lambda i: 0.5 + 0.001 * i), "zoo_accuracy_spread"),
])
def test_checks_fail_a_broken_zoo(tmp_path, broken, failing):
    result, checks, split_done = _check_zoo(tmp_path, **broken)
    assert checks[failing] is False, checks
    assert [n for n, ok in checks.items() if not ok] == [failing]
    assert not result.success and not split_done     # blocking: nothing downstream ran


def test_a_grown_zoo_gets_its_split_grown_keeping_every_part(tmp_path):
    from sne_core.splits import split_counts, split_path
    store = ZooStore(tmp_path / "store")
    write_synthetic_zoo(store, "digits", "arch1", 8)
    assert _materialise_zoo(tmp_path)[0].success
    before = store.read_frame(split_path("digits", "arch1", 0))
    write_synthetic_zoo(store, "digits", "arch1", 12, acc=lambda i: 0.2 + 0.05 * i)   # the same 8 and 4 more
    result, checks, split_done = _materialise_zoo(tmp_path, n_models=12)
    assert result.success and split_done, checks
    after = store.read_frame(split_path("digits", "arch1", 0))
    assert list(after.model_id) == list(range(12))
    assert list(after.split[:8]) == list(before.split)                     # the first 8 kept their parts
    assert split_counts(after) == {"train": 4, "val": 2, "test": 6, "excluded": 0}   # 4 new: 2 | 1 | 1


def test_the_zoo_asset_replaces_networks_of_another_training_protocol(tmp_path):
    from assets.zoo import stale_networks
    from sne_core.zoo import ZooConfig
    config = ZooConfig("digits", "arch1", n_models=4, epochs=1, max_images=300)
    store = ZooStore(tmp_path / "store")
    write_synthetic_zoo(store, "digits", "arch1", 4, protocol=config.protocol())
    assert stale_networks(store, config) == []
    assert stale_networks(store, ZooConfig("digits", "arch1", n_models=4, epochs=1, max_images=600)) == [0, 1, 2, 3]


def test_an_images_seen_budget_sets_the_zoo_epochs_per_dataset(tmp_path):
    profile = load_profile("smoke", n_models=4, max_images=256, zoo_images_seen=512)
    assert profile.zoo_epochs_for(1_438) == 2 and profile.zoo_epochs_for(100) == 5   # 512 / min(n, 256)
    assert load_profile("smoke", max_images=0, zoo_images_seen=60_000).zoo_epochs_for(1_438) == 42
    job = make_defs(tmp_path, profile=profile).resolve_job_def("regenerate_zoos")
    with DagsterInstance.ephemeral() as instance:
        job.execute_in_process(partition_key=str(zoo_partition("digits", "arch1")), instance=instance)
    models = ZooStore(tmp_path / "store").read_models("digits", "arch1")
    assert models.loc[models["is_final"], "epoch"].tolist() == [2, 2, 2, 2]


def test_schema_drift_fails_the_schema_check(tmp_path):
    import pyarrow.parquet as pq
    store = ZooStore(tmp_path / "store")
    write_synthetic_zoo(store, "digits", "arch1", 8)
    part = next((tmp_path / "store" / "models" / "dataset=digits" / "arch=arch1").glob("*.parquet"))
    table = pq.read_table(part)
    pq.write_table(table.drop_columns(["lr"]).replace_schema_metadata(table.schema.metadata), part)
    result, checks, split_done = _materialise_zoo(tmp_path)
    assert checks["zoo_schema"] is False and not result.success and not split_done


# ---------------------------------------------------------------- schedule and configuration

def test_schedule_and_its_run_requests_are_valid(tmp_path):
    defs = make_defs(tmp_path)
    schedule = defs.resolve_schedule_def("weekly_zoo_regeneration")
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.job_name == "regenerate_zoos"
    when = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=when,
                                         repository_def=defs.get_repository_def(),
                                         resources={"profile": defs.resources["profile"]})
        requests = list(schedule.evaluate_tick(context).run_requests)
    profile = load_profile("smoke")
    assert len(requests) == len(profile.zoos())
    job = defs.resolve_job_def("regenerate_zoos")
    keys = set(zoo_partitions.get_partition_keys())
    for r in requests:
        assert r.partition_key in keys
        assert r.run_config["resources"]["profile"]["config"]["zoo_seed"] == 20261130
        validate_run_config(job, r.run_config)     # raises on an invalid config
    assert len({r.run_key for r in requests}) == len(requests)
    # downstream follows the regenerated zoos through declarative automation
    for key in ("predictors", "in_distribution_table"):
        assert defs.resolve_assets_def(key).automation_conditions_by_key[AssetKey(key)] is not None


def test_composite_method_gets_each_parts_hyperparameters():
    smoke = load_profile("smoke")
    hyper = json.loads(smoke.predictor_hyper)
    assert smoke.hyper("sne_statnn") == {"sne": hyper["sne"], "statnn": hyper["statnn"]}
    own = load_profile("smoke", predictor_hyper=json.dumps({"sne_statnn": {"sne": {"hidden": 8}}}))
    assert own.hyper("sne_statnn") == {"sne": {"hidden": 8}}        # named itself: taken as given


def test_train_settings_go_to_sne_only():
    from sne_core.train import TrainConfig
    default = load_profile("smoke")
    assert default.train_settings("sne") == {"ema_epochs": None, "members": 1, "rank_weight": 0.0,
                                             "invariance_weight": None, "stats_weight": None, "aux_weight": None,
                                             "neuron_stats": None}   # None: sne_core.methods' defaults
    own = load_profile("smoke", sne_stats_weight=0.0, sne_invariance_weight=3.0, predictor_rank_weight=0.5,
                       sne_neuron_stats=0, predictor_ema_epochs=2.0)
    assert own.train_settings("sne") == {"ema_epochs": 2.0, "members": 1, "rank_weight": 0.5,
                                         "invariance_weight": 3.0, "stats_weight": 0.0, "aux_weight": None,
                                         "neuron_stats": False}
    TrainConfig(method="sne", **own.train_settings("sne"))
    for method in ("statnn", "gbm"):       # no learned code
        assert own.train_settings(method) == {"ema_epochs": 2.0, "members": 1, "rank_weight": 0.5}
        TrainConfig(method=method, **own.train_settings(method))
    # the composite shares the baselines' settings, and its SNE part gets what SNE's own partition gets
    assert own.train_settings("sne_statnn") == {"ema_epochs": 2.0, "members": 1, "rank_weight": 0.5, "part_train": {
        "sne": {"invariance_weight": 3.0, "stats_weight": 0.0, "neuron_stats": False}}}
    TrainConfig(method="sne_statnn", **own.train_settings("sne_statnn"))
    assert "part_train" not in default.train_settings("sne_statnn")     # nothing of SNE's own set: nothing to name
    with pytest.raises(ConfigError, match="field 'sne_stats_weight'"):
        load_profile("smoke", sne_stats_weight=-2.0)
    # SNE's own ranking weight overrides the shared one for SNE only (session 37's SNE beside default baselines)
    sne_only = load_profile("smoke", sne_rank_weight=0.3)
    assert sne_only.train_settings("sne")["rank_weight"] == 0.3
    assert TrainConfig(method="sne", **sne_only.train_settings("sne")).rank_weight == 0.3
    for method in ("statnn", "gbm", "sne_statnn"):
        assert sne_only.train_settings(method)["rank_weight"] == 0.0
    assert sne_only.train_settings("sne_statnn")["part_train"] == {"sne": {"rank_weight": 0.3}}
    assert load_profile("smoke", sne_rank_weight=0.0, predictor_rank_weight=0.5).train_settings("sne")["rank_weight"] == 0.0
    with pytest.raises(ConfigError, match="field 'sne_rank_weight'"):
        load_profile("smoke", sne_rank_weight=-0.5)
    # and its own ensemble size, which the baselines do not share
    ens = load_profile("smoke", sne_members=3, predictor_members=2)
    assert [ens.train_settings(m)["members"] for m in ("sne", "statnn", "sne_statnn")] == [3, 2, 2]
    assert ens.train_settings("sne_statnn")["part_train"] == {"sne": {"members": 3}}
    assert load_profile("smoke", predictor_members=2).train_settings("sne")["members"] == 2
    with pytest.raises(ConfigError, match="field 'sne_members'"):
        load_profile("smoke", sne_members=0)
    with pytest.raises(ConfigError, match="field 'sne_neuron_stats'"):
        load_profile("smoke", sne_neuron_stats=2)
    # the GPU profile trains session 38's SNE (branch, ranking loss, 3 members) with the records as targets (session
    # 47); its baselines keep their defaults
    full = load_profile("full")
    assert full.hyper("sne")["statistics_branch"] and not load_profile("demo").hyper("sne").get("statistics_branch")
    assert {k: full.train_settings("sne")[k] for k in ("members", "rank_weight", "aux_weight")} == {
        "members": 3, "rank_weight": 0.3, "aux_weight": 1.0}
    assert load_profile("demo").train_settings("sne")["aux_weight"] is None          # the library's default (off)
    assert [full.train_settings(m)["members"] for m in ("statnn", "sne_statnn")] == [1, 1]
    # its composite is made of that SNE (and the same StatNN), not of a default SNE refitted
    assert full.train_settings("sne_statnn")["part_train"] == {"sne": {"members": 3, "rank_weight": 0.3, "aux_weight": 1.0}}
    assert full.train_settings("gbm")["rank_weight"] == 0.0


def test_bad_configuration_is_refused_naming_the_field(tmp_path):
    for overrides, field in ((dict(n_models=1), "n_models"), (dict(methods=["sne", "nope"]), "methods"),
                             (dict(datasets=[]), "datasets"), (dict(predictor_hyper="{bad"), "predictor_hyper"),
                             (dict(predictor_ema_epochs=-0.5), "predictor_ema_epochs")):   # only -1 means "default"
        with pytest.raises(ConfigError, match=f"field '{field}'"):
            load_profile("smoke", **overrides)
    with pytest.raises(ConfigError, match="field 'profile'"):
        load_profile("huge")
    # through Dagster run config: refused when the resource is built, before any asset body runs
    defs = make_defs(tmp_path)
    job = defs.resolve_job_def("regenerate_zoos")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=str(zoo_partition("digits", "arch1")), instance=instance,
                                        run_config={"resources": {"profile": {"config": {"n_models": 1}}}},
                                        raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_failure)
        assert "n_models" in str(failure.event_specific_data.error)
        assert instance.get_latest_materialization_event(AssetKey("zoo")) is None
    assert not (tmp_path / "store" / "models").exists()
    from pipelines.demo import main
    assert main(["--profile", "nope"]) == 2


@pytest.mark.parametrize("seed", range(5))
def test_run_groups_are_exact_ranges(seed):
    """A group's range tags must select exactly its keys (a multi-dimensional range is a product of
    per-dimension ranges, so a group may not cross a method boundary with a partial zoo range)."""
    from dagster import PartitionKeyRange
    from assets.partitions import predictor_partitions, range_tags, run_groups
    rng = np.random.default_rng(seed)
    keys = predictor_partitions.get_partition_keys()
    wanted = [k for k in keys if rng.random() < 0.6]
    groups = run_groups(predictor_partitions, wanted, max_per_run=4)
    assert sorted(str(k) for g in groups for k in g) == sorted(str(k) for k in wanted)
    for g in groups:
        assert 1 <= len(g) <= 4
        tags = range_tags(g)
        got = predictor_partitions.get_partition_keys_in_range(
            PartitionKeyRange(tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]))
        assert [str(k) for k in got] == [str(k) for k in g]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_naming_the_field():
    assert DeviceResource(device="auto").resolve() == "cpu"
    with pytest.raises(ValueError, match="field 'device': device 'cuda': torch sees no CUDA device"):
        DeviceResource(device="cuda").resolve()
