"""Asset checks that fail a bad zoo before any predictor trains on it.

They run inside the zoo asset (as its `check_specs`), so each check judges the partition that
was just built, and they are *blocking*: a failed check stops splits and predictors downstream.

- diverged:   too large a share of networks diverged (loss went NaN; recorded, never dropped);
- spread:     test accuracies too close together to rank (Kendall tau would measure noise);
- nan_weights: a network recorded as "ok" holds NaN/Inf weights (the store or training is broken);
- schema:     the stored tables no longer have the columns/types and the weight layout this code expects.
"""
from __future__ import annotations

import math

import numpy as np
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

CHECK_NAMES = ("zoo_not_diverged", "zoo_accuracy_spread", "zoo_weights_finite", "zoo_schema")


def zoo_check_specs(asset_key: AssetKey | str = "zoo") -> list[AssetCheckSpec]:
    key = AssetKey.from_coercible(asset_key)
    descriptions = {
        "zoo_not_diverged": "share of diverged networks is at most profile.max_diverged_frac",
        "zoo_accuracy_spread": "p90 - p10 of final test accuracy (ok networks) is at least profile.min_acc_spread",
        "zoo_weights_finite": "no network with status 'ok' has a NaN or Inf weight",
        "zoo_schema": "models/layers tables match the store schema and the architecture's layout",
    }
    return [AssetCheckSpec(n, asset=key, description=descriptions[n], blocking=True) for n in CHECK_NAMES]


def _final(models):
    if "is_final" in models.columns:
        return models[models["is_final"].astype(bool)]
    return models.sort_values(["model_id", "epoch"]).groupby("model_id", as_index=False).tail(1)


def check_zoo(store, dataset: str, arch: str, max_diverged_frac: float, min_acc_spread: float) -> list[AssetCheckResult]:
    """All four checks on the stored zoo `dataset/arch`. Each result names the zoo and the numbers."""
    from sne_core.archs import get_arch
    from sne_core.store_schema import MODELS_SCHEMA
    zoo = f"{dataset}/{arch}"
    results: list[AssetCheckResult] = []

    def result(name: str, passed: bool, description: str, **meta) -> AssetCheckResult:
        return AssetCheckResult(check_name=name, passed=bool(passed), severity=AssetCheckSeverity.ERROR,
                                description=f"zoo {zoo}: {description}", metadata=meta)

    # schema first: if the tables cannot be read as expected, the other checks cannot run
    try:
        models = store.read_models(dataset, arch)
        missing = sorted(set(MODELS_SCHEMA) - set(models.columns))
        if missing:
            raise ValueError(f"models table lacks column(s) {missing}")
        weights, final_models = store.read_weights(dataset, arch, epoch="final")
        layout = get_arch(arch).layout
        if [tuple(p.shape[1:]) for p in weights.params] != [p.shape for p in layout]:
            raise ValueError("stored weight shapes do not match the architecture layout")
        schema_ok, schema_msg = True, f"{len(MODELS_SCHEMA)} columns and {len(layout)} tensors as expected"
    except Exception as e:  # the point of this check is to turn any read failure into a named failure
        schema_ok, schema_msg = False, f"schema drift: {type(e).__name__}: {e}"
    results.append(result("zoo_schema", schema_ok, schema_msg))
    if not schema_ok:
        for name in CHECK_NAMES[:3]:
            results.append(result(name, False, "not evaluated: the zoo's tables could not be read (see zoo_schema)"))
        return results

    final = _final(models)
    n = len(final)
    diverged = int((final["status"] != "ok").sum())
    frac = diverged / n if n else 1.0
    results.append(result("zoo_not_diverged", n > 0 and frac <= max_diverged_frac,
                          f"{diverged} of {n} networks diverged ({frac:.0%}; allowed {max_diverged_frac:.0%})",
                          diverged=diverged, networks=n, diverged_frac=float(frac)))

    acc = final.loc[final["status"] == "ok", "test_acc"].to_numpy(np.float64)
    acc = acc[np.isfinite(acc)]
    spread = float(np.quantile(acc, 0.9) - np.quantile(acc, 0.1)) if acc.size >= 2 else 0.0
    results.append(result("zoo_accuracy_spread", acc.size >= 3 and spread >= min_acc_spread,
                          f"test accuracy p90 - p10 = {spread:.4f} over {acc.size} ok networks "
                          f"(need >= {min_acc_spread} and >= 3 networks)",
                          spread=spread, acc_min=float(acc.min()) if acc.size else math.nan,
                          acc_max=float(acc.max()) if acc.size else math.nan))

    ok_rows = (final_models["status"] == "ok").to_numpy()
    finite = np.ones(len(final_models), dtype=bool)
    for p in weights.params:
        finite &= p.reshape(p.shape[0], -1).isfinite().all(dim=1).numpy()
    bad = final_models["model_id"].to_numpy()[ok_rows & ~finite]
    results.append(result("zoo_weights_finite", bad.size == 0,
                          f"{bad.size} network(s) with status 'ok' have NaN/Inf weights"
                          + (f": model ids {bad[:10].tolist()}" if bad.size else ""),
                          bad_networks=int(bad.size)))
    return results
