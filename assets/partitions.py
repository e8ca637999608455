"""Partitions: a zoo is (dataset, arch); a predictor is (method, training zoo).

The partition keys are static and known when the definitions load. The offline datasets are
the default; `SNE_DATASETS=mnist,fashion_mnist,digits,cifar10_gs` adds datasets whose files the
user has placed (SPEC §3), so the Dagster UI does not list partitions that cannot run here.
A profile then chooses which of these partitions a run materialises.
"""
from __future__ import annotations

import os

from dagster import MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition

from pipelines.profiles import ARCHS, METHODS, OFFLINE_DATASETS


def _env_list(name: str, default: tuple[str, ...]) -> list[str]:
    raw = os.environ.get(name, "")
    return [s.strip() for s in raw.split(",") if s.strip()] or list(default)


DATASETS = _env_list("SNE_DATASETS", OFFLINE_DATASETS)
ARCH_NAMES = _env_list("SNE_ARCHS", ARCHS)
METHOD_NAMES = _env_list("SNE_METHODS", METHODS)

# Zoo names in partition keys are "dataset-arch": "/" (the library's spelling) would have to be
# URL-escaped in every Dagster UI link; dataset names use "_", never "-", so the key parses back.
SEP = "-"


def zoo_key(dataset: str, arch: str) -> str:
    return f"{dataset}{SEP}{arch}"


def zoo_from_key(key: str) -> tuple[str, str]:
    dataset, _, arch = key.rpartition(SEP)
    if not dataset or not arch:
        raise ValueError(f"train_zoo partition key must be written dataset{SEP}arch, got {key!r}")
    return dataset, arch


dataset_partitions = StaticPartitionsDefinition(DATASETS)
zoo_partitions = MultiPartitionsDefinition({
    "dataset": StaticPartitionsDefinition(DATASETS),
    "arch": StaticPartitionsDefinition(ARCH_NAMES),
})
predictor_partitions = MultiPartitionsDefinition({
    "method": StaticPartitionsDefinition(METHOD_NAMES),
    "train_zoo": StaticPartitionsDefinition([zoo_key(d, a) for d in DATASETS for a in ARCH_NAMES]),
})


# A predictors run trains one method on every training zoo (a range of partitions): Dagster's
# run start-up (seconds each on a small CPU) is then paid 7 times for the whole table, not 42.
PREDICTORS_PER_RUN = len(DATASETS) * len(ARCH_NAMES)


def run_groups(partitions_def, wanted: list, max_per_run: int) -> list[list]:
    """`wanted` partition keys cut into runs of at most `max_per_run` keys, each a range that one
    Dagster run can materialise, in the definition's order. A multi-dimensional range is a product
    of per-dimension ranges, so a group is closed as soon as its range would cover other keys."""
    from dagster import PartitionKeyRange
    wanted_set, groups, current = {str(k) for k in wanted}, [], []

    def covers_exactly(keys) -> bool:
        got = partitions_def.get_partition_keys_in_range(PartitionKeyRange(str(keys[0]), str(keys[-1])))
        return [str(k) for k in got] == [str(k) for k in keys]

    for key in partitions_def.get_partition_keys():
        if str(key) not in wanted_set:
            if current:
                groups.append(current)
            current = []
        elif current and len(current) < max_per_run and covers_exactly([*current, key]):
            current.append(key)
        else:
            if current:
                groups.append(current)
            current = [key]
    if current:
        groups.append(current)
    return groups


def range_tags(keys: list) -> dict[str, str]:
    """Run tags that make one run materialise the contiguous range keys[0] .. keys[-1]."""
    return {"dagster/asset_partition_range_start": str(keys[0]), "dagster/asset_partition_range_end": str(keys[-1])}


def zoo_partition(dataset: str, arch: str) -> MultiPartitionKey:
    return MultiPartitionKey({"dataset": dataset, "arch": arch})


def predictor_partition(method: str, dataset: str, arch: str) -> MultiPartitionKey:
    return MultiPartitionKey({"method": method, "train_zoo": zoo_key(dataset, arch)})
