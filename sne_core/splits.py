"""Train/val/test splits by network (SPEC §2 "Splits"), seeded and stored beside the zoo.

Default protocol of the published baselines: final checkpoint only; 50% of the networks are
test, the rest are shuffled 80/20 into train/val. A split assigns *networks* (model ids), never
checkpoints, so no network can leak from train into test through another of its checkpoints.

Diverged networks (status != "ok", or a non-finite final test accuracy) get split "excluded"
with the reason in `note`. They are kept in the stored split so they stay counted and visible,
but no predictor ever trains or is scored on them: a diverged network has no meaningful test
accuracy to regress (NaN, or chance level reached by a NaN forward pass), and keeping them
would turn "predict accuracy" into "detect NaN weights".

The split is written once per (zoo, seed) to `splits/dataset=<d>/arch=<a>/seed=<s>.parquet`
in the zoo's store and read back by every method, so all rows of a table share test networks.

A zoo that grew (the same ids plus new ones, e.g. `sne zoo --models` raised) keeps its split when
it is grown (`grow_split`, `sne split --grow`, the Dagster `splits` asset): every stored network
keeps its part and only the new networks are split, by the stored fractions and seed. So results
computed before the growth stay valid on their networks, and no old test network ever becomes a
training network. Evaluation itself never grows a split: a split that no longer matches its zoo
is refused there, so a table is never scored on a split it did not ask for.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test", "excluded")
DEFAULT_TEST_FRAC = 0.5
DEFAULT_VAL_FRAC = 0.2


class SplitError(ValueError):
    """A stored split that no longer matches its zoo, or a zoo too small to split."""


def split_path(dataset: str, arch: str, seed: int) -> str:
    return f"splits/dataset={dataset}/arch={arch}/seed={seed}.parquet"


def final_rows(models_df):
    """One row per network: its last recorded checkpoint (the models table may hold several)."""
    for col in ("model_id", "test_acc", "status"):
        if col not in models_df.columns:
            raise SplitError(f"models table lacks column {col!r} (expected model_id, test_acc, status)")
    df = models_df
    if "is_final" in df.columns:
        df = df[df["is_final"].astype(bool)]
    if "epoch" in df.columns and df["model_id"].duplicated().any():
        df = df.sort_values(["model_id", "epoch"]).groupby("model_id", as_index=False).tail(1)
    elif df["model_id"].duplicated().any():
        dup = df.loc[df["model_id"].duplicated(), "model_id"].iloc[0]
        raise SplitError(f"models table lists model_id {dup} twice and has no 'epoch' column to pick the final one")
    return df.sort_values("model_id").reset_index(drop=True)


def make_split(models_df, seed: int, test_frac: float = DEFAULT_TEST_FRAC, val_frac: float = DEFAULT_VAL_FRAC):
    """DataFrame(model_id, split, note): every network of the zoo in exactly one split."""
    import pandas as pd
    if not (0 < test_frac < 1 and 0 < val_frac < 1):
        raise SplitError(f"test_frac and val_frac must lie in (0, 1), got {test_frac} and {val_frac}")
    df = final_rows(models_df)
    acc = df["test_acc"].to_numpy(dtype=np.float64)
    ok = (df["status"].to_numpy() == "ok") & np.isfinite(acc)
    note = np.where(df["status"].to_numpy() != "ok", "excluded: status=" + df["status"].astype(str).to_numpy(),
                    np.where(np.isfinite(acc), "", "excluded: non-finite test_acc")).astype(object)
    ids = df["model_id"].to_numpy(dtype=np.int64)
    eligible = ids[ok]
    if eligible.size < 3:
        raise SplitError(f"need at least 3 networks with status 'ok' and a finite test_acc to split, "
                         f"got {eligible.size} of {ids.size}")
    # Sort first so the split depends only on (ids, seed), not on the table's row order.
    order = np.random.default_rng(seed).permutation(np.sort(eligible))
    n_test = min(max(1, round(test_frac * order.size)), order.size - 2)
    n_val = min(max(1, round(val_frac * (order.size - n_test))), order.size - n_test - 1)
    split = pd.Series("excluded", index=ids, dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test:n_test + n_val]] = "val"
    split[order[n_test + n_val:]] = "train"
    return pd.DataFrame({"model_id": ids, "split": split.loc[ids].to_numpy(), "note": note})


def split_counts(split_df) -> dict[str, int]:
    counts = split_df["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SPLITS}


def validate_split(split_df, models_df, where: str, grown: bool = False) -> None:
    """The stored split must cover exactly the zoo's networks (grown=True: a subset of them, the
    zoo having grown since) and never use a diverged one."""
    if not {"model_id", "split"} <= set(split_df.columns):
        raise SplitError(f"{where}: split table needs columns model_id and split, got {list(split_df.columns)}")
    bad = set(split_df["split"]) - set(SPLITS)
    if bad:
        raise SplitError(f"{where}: field 'split' must be one of {SPLITS}, got {sorted(bad)}")
    zoo = final_rows(models_df)
    have, want = set(split_df["model_id"].tolist()), set(zoo["model_id"].tolist())
    if have - want:
        raise SplitError(
            f"{where}: {len(have - want)} ids in the split are not in the zoo, e.g. {sorted(have - want)[:5]}; the "
            "zoo was regenerated after the split was written. Delete this split file (and results computed on it) "
            "to re-split.")
    if want - have and not grown:
        raise SplitError(
            f"{where}: split does not match the zoo's model ids ({len(want - have)} networks of the zoo are not in "
            f"the split, e.g. {sorted(want - have)[:5]}); the zoo grew after the split was written. Run `sne split "
            "--grow` to split only the new networks (the others keep their part), or delete this split file (and "
            "results computed on it) to re-split.")
    used = split_df.loc[split_df["split"] != "excluded", "model_id"]
    unusable = zoo.loc[(zoo["status"] != "ok") | ~np.isfinite(zoo["test_acc"].astype(float)), "model_id"]
    clash = sorted(set(used) & set(unusable))
    if clash:
        raise SplitError(f"{where}: networks {clash[:5]} are in train/val/test but are now diverged or have no "
                         "finite test_acc; delete the split file to re-split")


def grow_split(split_df, models_df, seed: int, test_frac: float = DEFAULT_TEST_FRAC,
               val_frac: float = DEFAULT_VAL_FRAC, where: str = "split"):
    """The split of a zoo that grew: the networks of `split_df` keep their part (and note), the
    networks added since are split among themselves by make_split(seed, test_frac, val_frac)."""
    validate_split(split_df, models_df, where, grown=True)
    models = final_rows(models_df)
    new = models[~models["model_id"].isin(split_df["model_id"])]
    if new.empty:
        return split_df.sort_values("model_id").reset_index(drop=True)
    try:
        added = make_split(new, seed, test_frac, val_frac)
    except SplitError as e:
        raise SplitError(f"{where}: cannot split the {len(new)} networks added since the split was written: {e}") from e
    import pandas as pd
    grown = pd.concat([split_df[["model_id", "split", "note"]], added], ignore_index=True)
    return grown.sort_values("model_id").reset_index(drop=True)


def get_or_create_split(store, dataset: str, arch: str, seed: int = 0,
                        test_frac: float = DEFAULT_TEST_FRAC, val_frac: float = DEFAULT_VAL_FRAC,
                        grow: bool = False):
    """The zoo's stored split for `seed`, created (and written atomically by the store) on first use.
    grow=True: a zoo that grew since gets its stored split grown (`grow_split`, by the stored
    fractions) and rewritten; otherwise such a split is refused."""
    path = split_path(dataset, arch, seed)
    where = f"{store.root}/{path}" if hasattr(store, "root") else path
    models = store.read_models(dataset, arch)
    try:
        split = store.read_frame(path)
    except FileNotFoundError:
        split = None
    if split is None:
        split = make_split(models, seed, test_frac, val_frac)
    elif grow:
        stored = split.attrs.get("metadata", {})
        test_frac, val_frac = stored.get("test_frac", test_frac), stored.get("val_frac", val_frac)
        grown = grow_split(split, models, seed, test_frac, val_frac, where)
        if len(grown) == len(split):
            return split
        split = grown
    else:
        validate_split(split, models, where)
        return split
    counts = split_counts(split)
    store.write_frame(path, split, metadata={"seed": seed, "test_frac": test_frac, "val_frac": val_frac,
                                             **{f"n_{k}": v for k, v in counts.items()}})
    return split


def ids_in(split_df, part: str) -> np.ndarray:
    if part not in SPLITS:
        raise ValueError(f"split part must be one of {SPLITS}, got {part!r}")
    return np.sort(split_df.loc[split_df["split"] == part, "model_id"].to_numpy(dtype=np.int64))
