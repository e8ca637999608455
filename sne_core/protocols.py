"""Evaluation protocols (SPEC §1): in-distribution, cross-dataset and cross-architecture tables.

Every cell is mean +- std over predictor seeds (SPEC: "predictor seeds"); every method and every
seed sees the same stored split of each zoo (`sne_core.splits`, split seed 0 by default), so the
std measures the predictor's own variance and all rows are scored on the same test networks. A predictor trains on the train part of its
training zoo, selects its state on that zoo's val part, and is scored on the *test part* of each
test zoo: in-distribution on its own zoo's test split, cross-zoo on the target zoo's test split
(so a network never scored in-distribution as "train" is scored cross-zoo either, and the cross-
and in-distribution rows of one target zoo are measured on the very same networks).

A method that cannot read an architecture gives a row of NaNs with `note = "n/a: <reason>"`.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from sne_core.aux_targets import aux_targets
from sne_core.encoders import UnsupportedArchitecture
from sne_core.methods import check_method_arch, get_method
from sne_core.metrics import summarize
from sne_core.splits import get_or_create_split, ids_in
from sne_core.train import OutOfTime, TrainConfig, ZooData, fit, predict

TABLE_COLUMNS = ["method", "train_zoo", "test_zoo", "tau_mean", "tau_std", "r2_mean", "r2_std",
                 "l1_mean", "l1_std", "seeds", "note"]
AVERAGE = "average"


def parse_zoo(zoo) -> tuple[str, str]:
    """"mnist/arch1" or ("mnist", "arch1") -> ("mnist", "arch1")."""
    if isinstance(zoo, (tuple, list)) and len(zoo) == 2:
        return str(zoo[0]), str(zoo[1])
    parts = str(zoo).split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"zoo must be written dataset/arch (e.g. mnist/arch1), got {zoo!r}")
    return parts[0], parts[1]


def zoo_name(zoo) -> str:
    return "/".join(parse_zoo(zoo))


def seeded_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of the first n of a seeded permutation of range(n_total): for one seed, a
    smaller n gives a subset of a larger n's indices."""
    if not 0 < n <= n_total:
        raise ValueError(f"asked for {n} of {n_total} networks (expected 1 to {n_total})")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values.numpy()


def load_zoo(store, zoo, part: str, split_seed: int = 0, checkpoints: str = "final",
             max_networks: int | None = None) -> ZooData:
    """The networks of one split part (train/val/test) of a zoo with their targets: final
    checkpoints, or with checkpoints="all" every stored checkpoint of those networks (the split is by
    network, so no checkpoint of a test network can get in). `max_networks` keeps at most that many
    networks of the part, a subset seeded by `split_seed` (so every method and seed gets the same one),
    with every checkpoint of each kept network."""
    dataset, arch = parse_zoo(zoo)
    ids = ids_in(get_or_create_split(store, dataset, arch, split_seed), part)
    if max_networks is not None and max_networks < len(ids):
        ids = ids[seeded_subset(len(ids), max_networks, split_seed)]
    if checkpoints == "all":
        return _all_checkpoints(store, dataset, arch, ids, part)
    if checkpoints != "final":
        raise ValueError(f"checkpoints must be 'final' or 'all', got {checkpoints!r}")
    ws, models = store.read_weights(dataset, arch, epoch="final", model_ids=ids)
    got = np.asarray(models["model_id"], dtype=np.int64)
    if len(ws) != len(got) or set(got.tolist()) != set(ids.tolist()):
        raise ValueError(f"zoo {zoo_name(zoo)}: store returned {len(got)} networks for the {len(ids)} model ids "
                         f"of split part {part!r}; the weight files and the models table disagree")
    return ZooData([ws], models["test_acc"].to_numpy(np.float32), got, zoo=f"{zoo_name(zoo)}:{part}",
                   aux=aux_targets(models))


def _all_checkpoints(store, dataset: str, arch: str, ids, part: str) -> ZooData:
    """Every checkpoint of the networks `ids` with a finite accuracy (a diverged network's last
    checkpoint before it diverged included), epoch by epoch, one WeightSet."""
    ws, rows = store.read_weights(dataset, arch, epoch="all", model_ids=ids)   # one read of each file
    acc = rows["test_acc"].to_numpy(np.float64)
    keep = np.flatnonzero(np.isfinite(acc))
    keep = keep[np.lexsort((rows["model_id"].to_numpy()[keep], rows["epoch"].to_numpy()[keep]))]
    return ZooData([ws.subset(keep)], acc[keep].astype(np.float32), rows["model_id"].to_numpy(np.int64)[keep],
                   zoo=f"{dataset}/{arch}:{part}:all-checkpoints", aux=aux_targets(rows.iloc[keep]))


def _row(method, train_zoo, test_zoo, seed, metrics=None, note="", **extra) -> dict:
    m = metrics or {"tau": math.nan, "r2": math.nan, "l1": math.nan}
    return {"method": method, "train_zoo": train_zoo, "test_zoo": test_zoo, "seed": seed, **m, "note": note, **extra}


def evaluate(method: str, store, train_zoo, test_zoos: Iterable, seeds: Iterable[int],
             config: TrainConfig | None = None, split_seed: int = 0,
             log: Callable[[int, int, dict], None] | None = None,
             on_fit: Callable[[int, object, dict], None] | None = None, max_train: int | None = None,
             keep_fits=None, deadline: float | None = None):
    """Raw rows (method, train_zoo, test_zoo, seed, tau, r2, l1, note, val_tau, best_epoch, ...):
    one predictor per seed, trained on `train_zoo` (at most `max_train` of its training networks, the
    same seeded subset for every method and seed; see `load_zoo`), scored on every test zoo's test split.
    `log(seed, epoch, metrics)` receives the per-epoch training metrics; `on_fit(seed, fit_result,
    predictions)` receives each seed's FitResult and {test_zoo: (model_ids, y_true, y_pred)} (the
    pipeline logs these to MLflow as the checkpoint and the predicted-vs-true scatter). `keep_fits`: a
    folder where each seed's finished fits, and the fit in progress after every epoch, are kept
    (`<keep_fits>/seed<N>/`, see `fit`): a call interrupted at any seed, within an ensemble or within a fit trains
    on rerun only what it had not finished. `deadline` (a `time.time()`): no fit starts after it, and a kept one
    stops at its first epoch end past it; `OutOfTime` is raised instead (before any zoo is read, if it has passed
    already)."""
    import pandas as pd
    if deadline is not None and time.time() >= deadline:
        raise OutOfTime(f"{method} on {zoo_name(train_zoo)}: not started, its deadline has passed")
    config = config or TrainConfig()
    train_zoo, test_zoos, seeds = zoo_name(train_zoo), [zoo_name(z) for z in test_zoos], list(seeds)
    # training may see every checkpoint of its networks (config.train_checkpoints); validation and
    # test are always final checkpoints, the quantity the tables report
    train = load_zoo(store, train_zoo, "train", split_seed, config.train_checkpoints, max_networks=max_train)
    val = load_zoo(store, train_zoo, "val", split_seed)
    try:
        for g in train.groups:
            check_method_arch(method, g.arch)
    except UnsupportedArchitecture as e:
        return pd.DataFrame([_row(method, train_zoo, t, s, note=f"n/a: {e}") for s in seeds for t in test_zoos])
    # Which test zoos can this method, once built for the training arch, read at all? (The class-level
    # check, then the instance's: the MLP reads only the layout it was built for.) Test data is loaded
    # here only for its architecture and scores; `fit` below never receives it.
    tests = {t: load_zoo(store, t, "test", split_seed) for t in test_zoos}
    probe = get_method(method).build([g.arch for g in train.groups], config.hyper)
    na: dict[str, str] = {}
    for t, test in tests.items():
        try:
            for g in test.groups:
                check_method_arch(method, g.arch)
                if hasattr(probe, "check_arch"):
                    probe.check_arch(g.arch)
        except UnsupportedArchitecture as e:
            na[t] = f"n/a: {e}"
    rows = [_row(method, train_zoo, t, s, note=na[t]) for s in seeds for t in test_zoos if t in na]
    if len(na) == len(tests):
        return _in_order(pd.DataFrame(rows), test_zoos)
    for seed in seeds:
        cfg = replace(config, method=method, seed=seed)
        result = fit(cfg, train, val, log=None if log is None else (lambda e, m, s=seed: log(s, e, m)),
                     keep_fits=None if keep_fits is None else Path(keep_fits) / f"seed{seed}", deadline=deadline)
        extra = {"val_tau": result.val.get("tau", math.nan), "best_epoch": result.best_epoch,
                 "epochs_run": result.epochs_run, "fit_seconds": result.seconds, "n_train": len(train)}
        preds = {}
        for t in test_zoos:
            if t in na:
                continue
            pred, true = predict(result.model, tests[t]), tests[t].y.numpy()
            preds[t] = (tests[t].model_ids, true, pred)
            metrics = summarize(pred, true)
            note = "" if math.isfinite(metrics["tau"]) else "tau undefined: constant prediction"
            rows.append(_row(method, train_zoo, t, seed, metrics, note, **extra, n_test=len(tests[t])))
        if on_fit is not None:
            on_fit(seed, result, preds)
    return _in_order(pd.DataFrame(rows), test_zoos)


def compose(method: str, part_raws: list, part_predictions: list):
    """A composite method's rows and predictions (`Method.parts`, e.g. sne_statnn: the mean logit of
    its parts, sne_core.ensemble) from its parts' saved test predictions instead of a refit. The parts
    of a composite are trained exactly as the parts run alone (own defaults, the same seed), so this is
    the composite's result, up to float rounding of the logits recovered from the saved probabilities
    (tests/test_import_results.py: within 1e-6 of a refit). A cell is n/a if any part's is. Rows carry
    no validation metrics: only test predictions are saved."""
    import pandas as pd
    from scipy.special import expit, logit
    on = ["test_zoo", "seed", "model_id"]
    merged = part_predictions[0][on + ["y_true"]]
    for i, p in enumerate(part_predictions):
        merged = merged.merge(p[on + ["y_pred"]].rename(columns={"y_pred": f"part{i}"}), on=on)
    # predict() returns float32 sigmoids: their logits come back exactly, except from a probability that
    # rounded to 0 (logit < -103) or 1 (logit > 16.6); those are held at the nearest float32 values
    probs = np.clip(merged[[f"part{i}" for i in range(len(part_predictions))]].to_numpy(np.float64),
                    float(np.finfo(np.float32).smallest_subnormal), 1 - 2.0 ** -24)
    merged["y_pred"] = expit(logit(probs).mean(axis=1))         # sigmoid of the mean logit
    cells = dict(list(merged.groupby(["test_zoo", "seed"])))
    rows = []
    for r in part_raws[0].itertuples(index=False):
        parts = [pr[(pr["test_zoo"] == r.test_zoo) & (pr["seed"] == r.seed)].iloc[0] for pr in part_raws]
        na = next((str(q["note"]) for q in parts if str(q["note"]).startswith("n/a")), None)
        if na is not None:
            rows.append(_row(method, r.train_zoo, r.test_zoo, r.seed, note=na))
            continue
        cell = cells[(r.test_zoo, r.seed)].sort_values("model_id")
        metrics = summarize(cell["y_pred"].to_numpy(), cell["y_true"].to_numpy())
        note = "composed from its parts' predictions" if math.isfinite(metrics["tau"]) else \
            "tau undefined: constant prediction"
        rows.append(_row(method, r.train_zoo, r.test_zoo, r.seed, metrics, note,
                         fit_seconds=sum(float(q["fit_seconds"]) for q in parts), n_train=int(parts[0]["n_train"]),
                         n_test=len(cell)))
    preds = merged.assign(method=method, train_zoo=part_raws[0]["train_zoo"].iloc[0])
    return pd.DataFrame(rows), preds


def _in_order(raw, test_zoos: list[str]):
    """Rows by seed, then test zoo in the order asked for."""
    rank = {t: i for i, t in enumerate(test_zoos)}
    return raw.sort_values(["seed", "test_zoo"], key=lambda c: c.map(rank) if c.name == "test_zoo" else c,
                           kind="stable", ignore_index=True)


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan   # sample std over seeds


def aggregate(raw):
    """Raw per-seed rows -> one row per (method, train_zoo, test_zoo): mean +- std over seeds."""
    import pandas as pd
    out = []
    for (method, train_zoo, test_zoo), g in raw.groupby(["method", "train_zoo", "test_zoo"], sort=False):
        row = {"method": method, "train_zoo": train_zoo, "test_zoo": test_zoo}
        for k in ("tau", "r2", "l1"):
            row[f"{k}_mean"], row[f"{k}_std"] = _mean_std(g[k].to_numpy(np.float64))
        row["seeds"] = int(np.isfinite(g["tau"].to_numpy(np.float64)).sum())
        notes = [n for n in g["note"].fillna("") if n]
        row["note"] = notes[0] if notes else ""
        out.append(row)
    return pd.DataFrame(out, columns=TABLE_COLUMNS)


def average_rows(raw, label: str):
    """Per method and seed: the mean over the cells in `raw`; then mean +- std over seeds.
    A method with an n/a cell gets an n/a average (an average over a subset would mislead)."""
    import pandas as pd
    per_seed = []
    for (method, seed), g in raw.groupby(["method", "seed"], sort=False):
        notes = [n for n in g["note"].fillna("") if n]
        per_seed.append({"method": method, "train_zoo": AVERAGE, "test_zoo": label, "seed": seed,
                         **{k: g[k].mean() if g[k].notna().all() else math.nan for k in ("tau", "r2", "l1")},
                         "note": notes[0] if notes else ""})
    return aggregate(pd.DataFrame(per_seed))


def _table(name: str, methods, store, plan, seeds, config, split_seed, archs=("arch1", "arch2"), raw_out=None,
           log=None):
    """Run `evaluate` for each (train_zoo, test_zoos) of `plan` and every method, then cut table
    `name` out of the rows with `tables_from_raw` (the one place that knows the tables' rows)."""
    import pandas as pd
    raw = pd.concat([evaluate(m, store, tz, tests, seeds, config, split_seed, log)
                     for m in methods for tz, tests in plan if tests], ignore_index=True)
    if raw_out is not None:
        raw_out.append(raw)
    return tables_from_raw(raw, archs)[name]


def _by_arch(zoos) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for z in zoos:
        groups.setdefault(parse_zoo(z)[1], []).append(zoo_name(z))
    return groups


def in_distribution(methods, store, zoos, seeds=(0, 1, 2), config=None, split_seed=0, raw_out=None, log=None):
    """Train and test on the same zoo (its train/val vs its test split)."""
    plan = [(zoo_name(z), [zoo_name(z)]) for z in zoos]
    return _table("in_distribution", methods, store, plan, seeds, config, split_seed, raw_out=raw_out, log=log)


def cross_dataset(methods, store, zoos, seeds=(0, 1, 2), config=None, split_seed=0, raw_out=None, log=None):
    """Train on each zoo, test on every *other* zoo of the same architecture; one average row per
    method and architecture (train_zoo = "average", test_zoo = the architecture)."""
    plan = [(a, [b for b in g if b != a]) for g in _by_arch(zoos).values() for a in g]
    return _table("cross_dataset", methods, store, plan, seeds, config, split_seed, raw_out=raw_out, log=log)


def cross_architecture(methods, store, zoos, seeds=(0, 1, 2), config=None, split_seed=0,
                       archs: tuple[str, str] = ("arch1", "arch2"), raw_out=None, log=None):
    """Train on each zoo of archs[0], test on every zoo of archs[1] (every dataset pair), and the
    reverse; one average row per method and direction (test_zoo = "arch1->arch2")."""
    groups = _by_arch(zoos)
    plan = [(a, groups[dst]) for src, dst in (archs, archs[::-1]) if groups.get(src) and groups.get(dst)
            for a in groups[src]]
    return _table("cross_architecture", methods, store, plan, seeds, config, split_seed, archs, raw_out, log)


def _cell(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def format_table(df) -> str:
    """Markdown: one line per row, cells mean ± std over seeds, n/a (with the reason) where a
    method cannot read an architecture."""
    lines = ["| method | train zoo | test zoo | Kendall tau | R² | L1 | seeds | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in df.itertuples(index=False):
        note = str(r.note or "").replace("|", "/")
        lines.append(f"| {r.method} | {r.train_zoo} | {r.test_zoo} | {_cell(r.tau_mean, r.tau_std)} | "
                     f"{_cell(r.r2_mean, r.r2_std)} | {_cell(r.l1_mean, r.l1_std)} | {r.seeds} | {note} |")
    return "\n".join(lines)


def evaluate_all(methods, store, zoos, seeds=(0, 1, 2), config=None, split_seed=0, log=None, on_fit=None):
    """Raw rows for all three tables at the cost of one: each (method, training zoo, seed) is
    trained once and scored on the test split of *every* zoo. `tables_from_raw` then cuts the
    in-distribution, cross-dataset and cross-architecture tables out of these rows."""
    import pandas as pd
    names = [zoo_name(z) for z in zoos]
    return pd.concat([evaluate(m, store, tz, names, seeds, config, split_seed,
                               None if log is None else (lambda s, e, x, m=m, tz=tz: log(m, tz, s, e, x)),
                               None if on_fit is None else (lambda s, r, p, m=m, tz=tz: on_fit(m, tz, s, r, p)))
                      for m in methods for tz in names], ignore_index=True)


def tables_from_raw(raw, archs: tuple[str, str] = ("arch1", "arch2")) -> dict:
    """{"in_distribution", "cross_dataset", "cross_architecture"} -> aggregated tables: every cell
    (mean ± std over seeds) and the average rows (cross-dataset: per architecture; cross-architecture:
    per direction)."""
    import pandas as pd
    arch = lambda col: raw[col].map(lambda z: parse_zoo(z)[1])
    same_zoo = raw["train_zoo"] == raw["test_zoo"]
    same_arch = arch("train_zoo") == arch("test_zoo")
    tables = {"in_distribution": aggregate(raw[same_zoo])}
    cross = raw[same_arch & ~same_zoo]
    cross_arch = arch("test_zoo")[cross.index]
    parts = [aggregate(cross)] + [average_rows(cross[cross_arch == a], a) for a in sorted(set(cross_arch))]
    tables["cross_dataset"] = pd.concat(parts, ignore_index=True)
    parts = []
    for src, dst in (archs, archs[::-1]):
        sel = raw[(arch("train_zoo") == src) & (arch("test_zoo") == dst)]
        if len(sel):
            parts += [aggregate(sel), average_rows(sel, f"{src}->{dst}")]
    tables["cross_architecture"] = pd.concat(parts, ignore_index=True) if parts else aggregate(raw.iloc[:0])
    return tables
