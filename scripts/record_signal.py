"""How much of a zoo's ranking would its training records explain? GBM on the weight statistics plus one record.

    python scripts/record_signal.py --store results/store --zoo digits/arch2 --out rows.csv

A predictor sees only the weights, but the zoo's `models` table also holds how each network was
trained (learning rate, L2, dropout, train fraction, init, optimizer, activation) and how training went
(train accuracy, train and test loss): `sne_core.aux_targets.TARGETS`, SNE's record targets
(TrainConfig.aux_weight). For each record this script fits GBM (`sne_core.baselines.gbm`, rounds chosen
on validation) on every tensor's StatNN statistics plus the record's true value, and scores it by Kendall
tau on the zoo's test split: how much knowing that record exactly would add to GBM's ranking. Beside it,
how well the statistics alone read the record on the test networks (Spearman's rho of a GBM regressor for
the numbers, the accuracy of a GBM classifier for the classes): what a weight-space encoder could still
learn to read. Two more rows: the statistics alone (the GBM baseline) and with every hyperparameter
record at once. An oracle, not a predictor: the records are labels no predictor gets at test time.
Library only; last line `record_signal zoo=... tau_stats=... tau_hyperparameters=...`.
"""
from __future__ import annotations

import sys

import numpy as np

from tensor_signal import parse_args, show_rows, zoo_features   # scripts/ is on sys.path when this file runs as a script

# the records that say how training went; every other TARGETS column says how it was set up (a hyperparameter)
OUTCOMES = ("train_acc", "log_train_loss", "log_test_loss")


def readability(x: dict, records: dict, j: int, name: str, seed: int) -> float:
    """How well the statistics x read record column j (`name`) on the test networks where it is defined:
    Spearman's rho (numbers) or accuracy (classes) of a GBM fitted on the training networks."""
    from scipy.stats import spearmanr
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sne_core.aux_targets import CLASSES
    r = {k: records[k][:, j] for k in ("train", "test")}
    tr, te = np.isfinite(r["train"]), np.isfinite(r["test"])
    if tr.sum() < 2 or te.sum() < 2 or np.unique(r["train"][tr]).size < 2:
        return float("nan")
    if name in CLASSES:
        gbm = HistGradientBoostingClassifier(random_state=seed).fit(x["train"][tr], r["train"][tr])
        return float(np.mean(gbm.predict(x["test"][te]) == r["test"][te]))
    pred = HistGradientBoostingRegressor(random_state=seed).fit(x["train"][tr], r["train"][tr]).predict(x["test"][te])
    if np.ptp(pred) == 0 or np.ptp(r["test"][te]) == 0:       # a constant ranks nothing: rho is undefined
        return float("nan")
    return float(spearmanr(pred, r["test"][te]).correlation)


def record_rows(x: dict, y: dict, records: dict, seed: int = 0) -> list[dict]:
    """x, y, records: {"train", "val", "test"} -> statistics, accuracies and TARGETS columns. One row per
    record, after the statistics-only row; then every hyperparameter record together."""
    from sne_core.aux_targets import TARGETS
    from sne_core.baselines.gbm import GBMPredictor
    from sne_core.metrics import kendall_tau

    def tau(cols: list[int]) -> float:
        f = {k: np.hstack([x[k], records[k][:, cols]]) for k in x}
        gbm = GBMPredictor([], n_threads=1).fit_features(f["train"], y["train"], f["val"], y["val"], seed)
        return kendall_tau(gbm.predict_features(f["test"]), y["test"])

    rows = [{"record": "(statistics only)", "kind": "", "tau_with": tau([]), "readable": float("nan")}]
    for j, name in enumerate(TARGETS):
        rows.append({"record": name, "kind": "outcome" if name in OUTCOMES else "hyperparameter",
                     "tau_with": tau([j]), "readable": readability(x, records, j, name, seed)})
    hyper = [j for j, name in enumerate(TARGETS) if name not in OUTCOMES]
    rows.append({"record": "(every hyperparameter)", "kind": "hyperparameter", "tau_with": tau(hyper),
                 "readable": float("nan")})
    return rows


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    import pandas as pd
    import torch

    _, x, y, records = zoo_features(args.store, args.zoo, args.n_train, args.seed, args.min_acc, "record_signal")
    torch.set_num_threads(1)
    rows = pd.DataFrame(record_rows(x, y, records, args.seed))
    show_rows(rows, args, y)
    print(f"record_signal zoo={args.zoo} tau_stats={rows.tau_with.iloc[0]:.4f} "
          f"tau_hyperparameters={rows.tau_with.iloc[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
