"""How well predicted accuracies match true ones: Kendall tau (primary), R² and L1 (SPEC §1).

All functions take 1-D arrays of accuracies in [0, 1] (numpy, lists or CPU tensors).
"""
from __future__ import annotations

import numpy as np


def _as_arrays(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same length, got {p.shape[0]} and {t.shape[0]}")
    if p.size == 0:
        raise ValueError("pred and true are empty: nothing to score")
    return p, t


def kendall_tau(pred, true) -> float:
    """Kendall's tau-b (scipy). NaN when either side is constant (the rank order is undefined)."""
    from scipy.stats import kendalltau
    p, t = _as_arrays(pred, true)
    if p.size < 2:
        return float("nan")
    return float(kendalltau(p, t).statistic)


def r2(pred, true) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot; NaN when `true` is constant."""
    p, t = _as_arrays(pred, true)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(((t - p) ** 2).sum()) / ss_tot


def l1(pred, true) -> float:
    """Mean absolute error, in accuracy units (0.01 = one percentage point)."""
    p, t = _as_arrays(pred, true)
    return float(np.abs(p - t).mean())


def summarize(pred, true) -> dict[str, float]:
    return {"tau": kendall_tau(pred, true), "r2": r2(pred, true), "l1": l1(pred, true)}


def noise_ceiling_tau(acc, n_images: int, draws: int = 5, seed: int = 0) -> float:
    """About the tau a perfect predictor could reach against test accuracies measured on `n_images`
    images. A network's measured accuracy is a binomial draw around its true one, so even the true
    accuracy ranks the measured ones imperfectly. Taking the measured `acc` as the true values, this
    is the mean tau between them and `draws` binomial re-measurements (seeded). It says how much of a
    zoo's shortfall from tau = 1 is the test set's size (e.g. digits' 359 images), not the predictor."""
    t, remeasure = _binomial_remeasure(acc, n_images, seed)
    return float(np.mean([kendall_tau(remeasure(), t) for _ in range(draws)]))


def binomial_split_half_tau(acc, n_images: int, draws: int = 5, seed: int = 0) -> float:
    """The tau between two independent binomial measurements of `acc` on `n_images` images each:
    what a split-half test would give if every network's errors were independent draws."""
    _, remeasure = _binomial_remeasure(acc, n_images, seed)
    return float(np.mean([kendall_tau(remeasure(), remeasure()) for _ in range(draws)]))


def _binomial_remeasure(acc, n_images: int, seed: int):
    """(accuracies clipped to [0, 1], a seeded function drawing their measurement on n_images images)."""
    t = np.clip(np.asarray(acc, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if n_images < 1 or t.size < 2:
        raise ValueError(f"need n_images >= 1 and at least 2 accuracies, got {n_images} and {t.size}")
    rng = np.random.default_rng(seed)
    return t, lambda: rng.binomial(n_images, t) / n_images


def split_half_ceiling_tau(tau_half: float) -> float:
    """The tau between networks' true accuracies and their accuracies on the whole test set, from
    `tau_half`, the tau between their accuracies on its two halves. Assumes bivariate normal
    scores: Greiner's relation r = sin(pi tau / 2) turns tau into a correlation, Spearman-Brown
    (2r / (1 + r)) gives the reliability of a measurement on twice the images, and its square root
    is the correlation of the true value with that measurement, turned back into a tau."""
    r = np.sin(np.pi * float(tau_half) / 2)
    reliability = max(2 * r / (1 + r), 0.0) if r > -1 else 0.0
    return float(2 / np.pi * np.arcsin(np.sqrt(reliability)))


def tau_by_region(pred, true, floor: float = 0.2) -> dict[str, float]:
    """Where a ranking's Kendall tau comes from, split at the accuracy `floor` (default 0.2, twice
    chance on 10 classes): networks that collapsed (true < floor) and networks that learned.

    Returns tau-a (mean of sign(dp) * sign(dt) over pairs) on each of three disjoint sets of pairs,
    "below" (both collapsed), "above" (both learned) and "across" (one of each), with each set's
    share of all pairs (`share_*`) and "all", the tau-a over every pair. The shares weight the parts
    back into the whole exactly: all = sum of share * part. Why: a zoo's collapsed networks are a
    third of it, near-perfectly told apart from the learned ones by every method, while the methods
    differ in how they rank the learned ones (docs/RESULTS.md, session 11). A region with no pairs
    gives NaN."""
    p, t = _as_arrays(pred, true)
    low = t < floor
    sums = dict.fromkeys(("below", "above", "across"), 0.0)
    n_low, n_high = int(low.sum()), int((~low).sum())
    counts = {"below": n_low * (n_low - 1) // 2, "above": n_high * (n_high - 1) // 2, "across": n_low * n_high}
    block = 1024                                   # rows per block: memory O(block * n), not O(n^2)
    for i0 in range(0, p.size, block):
        i = np.arange(i0, min(i0 + block, p.size))
        upper = np.arange(p.size)[None, :] > i[:, None]                # each pair once
        s = np.sign(p[i, None] - p[None]) * np.sign(t[i, None] - t[None])
        both_low, both_high = low[i, None] & low[None], ~low[i, None] & ~low[None]
        for name, where in (("below", both_low), ("above", both_high), ("across", ~both_low & ~both_high)):
            sums[name] += float(s[upper & where].sum())
    n_pairs = p.size * (p.size - 1) // 2
    out = {name: sums[name] / counts[name] if counts[name] else float("nan") for name in sums}
    out |= {f"share_{name}": counts[name] / n_pairs if n_pairs else float("nan") for name in sums}
    out["all"] = sum(sums.values()) / n_pairs if n_pairs else float("nan")
    return out
