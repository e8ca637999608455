"""Dagster assets of the SNE pipeline. They only wire data between `sne_core` functions and the
store: dataset -> zoo -> splits -> predictors -> result tables (see docs/PIPELINE.md)."""
import warnings

from dagster._utils.warnings import BetaWarning

# Two beta features are used on purpose (Dagster 1.13): the zoo -> dataset partition mapping and
# backfill policies (a predictors run covers one method on every zoo). Without this filter every
# run process prints both warnings on each start.
warnings.filterwarnings("ignore", category=BetaWarning)

from assets.predictors import predictors
from assets.tables import TABLE_ASSETS, cross_architecture_table, cross_dataset_table, in_distribution_table
from assets.zoo import dataset, splits, zoo

__all__ = ["dataset", "zoo", "splits", "predictors", "in_distribution_table", "cross_dataset_table",
           "cross_architecture_table", "TABLE_ASSETS"]
