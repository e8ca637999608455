"""dataset -> zoo -> splits: the trained networks of one (dataset, arch) and their split.

The zoo's weights and metrics live in the Parquet store (`sne_core.store`), not in Dagster's IO
manager: every asset returns metadata only, and the next asset reads the store. The store is
resumable, so re-materialising a zoo trains only the networks it does not hold yet.
"""

from dagster import (AssetDep, AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue,
                     MultiToSingleDimensionPartitionMapping, asset)

from assets.checks import check_zoo, zoo_check_specs
from assets.partitions import dataset_partitions, zoo_partitions
from pipelines.profiles import RunProfile
from pipelines.resources import DeviceResource, StoreResource

GROUP = "zoos"
ZOO_TO_DATASET = MultiToSingleDimensionPartitionMapping("dataset")


def _zoo_of(context: AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["dataset"], keys["arch"]


@asset(partitions_def=dataset_partitions, group_name=GROUP, kinds={"python"},
       backfill_policy=BackfillPolicy.single_run(),   # seconds of work each: one run loads them all
       description="An image dataset served as float32 [N, 1, 28, 28] in [-1, 1] (sne_core.data); "
                   "checks that its files are present and records its size.")
def dataset(context: AssetExecutionContext, store: StoreResource, profile: RunProfile) -> MaterializeResult:
    per_name = {name: _dataset_metadata(name, store, profile) for name in context.partition_keys}
    if len(per_name) == 1:
        return MaterializeResult(metadata=next(iter(per_name.values())))
    return MaterializeResult(metadata={f"{name}.{k}": v for name, meta in per_name.items() for k, v in meta.items()})


def _dataset_metadata(name: str, store: StoreResource, profile: RunProfile) -> dict:
    from sne_core.data import load_dataset
    data = load_dataset(name, store.datasets_uri())
    return {
        "n_train": len(data.y_train), "n_test": len(data.y_test), "classes": data.num_classes,
        "zoo_train_images": profile.zoo_train_images(len(data.y_train)),
        "zoo_epochs": profile.zoo_epochs_for(len(data.y_train)),
        "zoo_test_images": min(len(data.y_test), profile.max_test_images or len(data.y_test)),
        "shape": str(tuple(data.x_train.shape[1:])), "root": MetadataValue.path(store.datasets_uri()),
    }


@asset(partitions_def=zoo_partitions, group_name=GROUP, kinds={"pytorch", "parquet"}, pool="sne_training",
       deps=[AssetDep(dataset, partition_mapping=ZOO_TO_DATASET)],
       check_specs=zoo_check_specs("zoo"),
       description="A zoo of small CNNs trained with sampled hyperparameters (SPEC §2), weights and "
                   "metrics as Parquet in the store; diverged networks are recorded, never dropped.")
def zoo(context: AssetExecutionContext, store: StoreResource, profile: RunProfile, device: DeviceResource):
    from sne_core.data import load_dataset
    from sne_core.store import StoreError
    from sne_core.zoo import ZooConfig, build_zoo
    ds, arch = _zoo_of(context)
    zoo_store = store.get()
    data = load_dataset(ds, store.datasets_uri())   # the zoo config caps the images it trains on
    config = ZooConfig(dataset=ds, arch=arch, n_models=profile.n_models, epochs=profile.zoo_epochs_for(len(data.y_train)),
                       seed=profile.zoo_seed, batch_size=profile.zoo_batch_size,
                       max_images=profile.max_images or None, max_test_images=profile.max_test_images or None,
                       device=device.resolve(), strategy=profile.zoo_strategy)
    try:
        stale = stale_networks(zoo_store, config)
    except StoreError as e:
        # An unreadable stored zoo (schema drift, a corrupted file) is reported by the zoo_schema
        # check, which blocks everything downstream; training into it would only add to the mess.
        context.log.error(f"zoo {ds}/{arch}: stored zoo unreadable: {e}")
        checks = check_zoo(zoo_store, ds, arch, profile.max_diverged_frac, profile.min_acc_spread)
        return MaterializeResult(metadata={"error": MetadataValue.text(str(e))}, check_results=checks)
    if stale:
        # The store resumes by model id; networks drawn with another seed or trained for another
        # number of epochs belong to a different zoo, so they go (and the splits made on them).
        context.log.info(f"zoo {ds}/{arch}: replacing {len(stale)} network(s) of another zoo configuration")
        zoo_store.delete_networks(ds, arch, stale)
        drop_splits(zoo_store, ds, arch)
    context.log.info(f"zoo {ds}/{arch}: {profile.n_models} networks, {config.epochs} epochs")
    summary = build_zoo(config, data, zoo_store, progress=False)
    context.log.info(summary.format())
    checks = check_zoo(zoo_store, ds, arch, profile.max_diverged_frac, profile.min_acc_spread)
    return MaterializeResult(metadata=_zoo_metadata(zoo_store, ds, arch, summary), check_results=checks)


def stale_networks(zoo_store, config) -> list[int]:
    """Stored networks that are not this config's: another zoo seed, another recorded training
    protocol (ZooConfig.protocol), another final epoch (for a network that did not diverge, in
    parts written before protocols were recorded), or a model id beyond n_models."""
    if (config.dataset, config.arch) not in zoo_store.zoos():
        return []
    models = zoo_store.read_models(config.dataset, config.arch)
    final = models[models["is_final"].astype(bool)]
    other_protocol = {i for _, _, ids in zoo_store.protocol_conflicts(config.dataset, config.arch, config.protocol())
                      for i in ids}
    bad = (final["zoo_seed"] != config.seed) | (final["model_id"] >= config.n_models) | \
          ((final["status"] == "ok") & (final["epoch"] != config.epochs)) | final["model_id"].isin(other_protocol)
    return sorted(final.loc[bad, "model_id"].astype(int).tolist())


def drop_splits(zoo_store, dataset: str, arch: str) -> None:
    """Remove the zoo's stored splits (they name networks that no longer exist)."""
    from pyarrow.fs import FileSelector, FileType
    from sne_core.store_io import join
    folder = join(zoo_store.base, f"splits/dataset={dataset}/arch={arch}")
    for info in zoo_store.fs.get_file_info(FileSelector(folder, allow_not_found=True)):
        if info.type == FileType.File:
            zoo_store.fs.delete_file(info.path)


def _zoo_metadata(zoo_store, ds: str, arch: str, summary) -> dict:
    models = zoo_store.read_models(ds, arch)
    final = models[models["is_final"].astype(bool)]
    ok = final[final["status"] == "ok"]
    meta = {
        "networks": len(final), "diverged": int((final["status"] != "ok").sum()),
        "zoo_seed": int(final["zoo_seed"].iloc[0]) if len(final) else -1,
        "test_acc_min": float(ok["test_acc"].min()) if len(ok) else float("nan"),
        "test_acc_median": float(ok["test_acc"].median()) if len(ok) else float("nan"),
        "test_acc_max": float(ok["test_acc"].max()) if len(ok) else float("nan"),
    }
    meta["trained_now"] = summary.trained_now
    meta["summary"] = MetadataValue.text(summary.format())
    return meta


@asset(partitions_def=zoo_partitions, group_name=GROUP, kinds={"parquet"}, deps=[zoo],
       description="Train/val/test split of the zoo's networks (by network, never by checkpoint; "
                   "sne_core.splits), written once per split seed beside the zoo; when the zoo grew, only "
                   "the new networks are split and the others keep their part.")
def splits(context: AssetExecutionContext, store: StoreResource, profile: RunProfile) -> MaterializeResult:
    from sne_core.splits import get_or_create_split, split_counts, split_path
    ds, arch = _zoo_of(context)
    # grow: this asset runs right after `zoo`, so a zoo with more networks than its split has grown
    # (a profile with a larger n_models); keeping the old parts keeps earlier results valid
    split = get_or_create_split(store.get(), ds, arch, profile.split_seed, grow=True)
    return MaterializeResult(metadata={**split_counts(split), "split_seed": profile.split_seed,
                                       "path": split_path(ds, arch, profile.split_seed)})
