"""Dagster assets of the SNE pipeline. They only wire data between `sne_core` functions and the
store: dataset -> zoo -> splits -> predictors -> result tables (see docs/PIPELINE.md)."""
from assets.predictors import predictors
from assets.tables import TABLE_ASSETS, cross_architecture_table, cross_dataset_table, in_distribution_table
from assets.zoo import dataset, splits, zoo

__all__ = ["dataset", "zoo", "splits", "predictors", "in_distribution_table", "cross_dataset_table",
           "cross_architecture_table", "TABLE_ASSETS"]
