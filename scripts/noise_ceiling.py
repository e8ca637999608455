"""How much of a zoo's shortfall from tau = 1 is its test set? A split-half test of its test accuracies.

    python scripts/noise_ceiling.py --store results/store --zoo digits/arch1

A network's test accuracy is measured on a finite test set (digits: 359 images), so even its true
accuracy would not rank the measured ones perfectly. This script re-evaluates the final weights of
the zoo's test-split networks on two seeded halves of the zoo's test set, and reports
- the measured split-half tau (accuracy on one half against the other),
- the same under a binomial model of independent errors (`metrics.binomial_split_half_tau`),
  which says whether that model holds,
- the ceiling: the tau a perfect predictor of the true accuracy could reach against accuracies on
  the whole test set, estimated from the measured split-half tau (`metrics.split_half_ceiling_tau`)
  and, for comparison, by the binomial model.
The test set is the one the zoo's recorded training protocol names (its max_test_images; the flag
overrides it), and the script checks that its full-test accuracies are the stored ones and stops if
not. Library only; last line `noise_ceiling zoo=... ceiling_tau=...`.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def split_accuracies(store, dataset: str, arch: str, x, y, halves, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(stored test accuracy, [N, 1 + len(halves)] recomputed accuracies on all of x and on each half)
    of the final checkpoints of the zoo's test-split networks. The halves partition x, so the whole
    set's accuracy is their size-weighted mean: one forward pass over x, not two."""
    import torch
    from sne_core.archs import build_model
    from sne_core.splits import get_or_create_split, ids_in
    from sne_core.zoo_network import evaluate_model
    ids = ids_in(get_or_create_split(store, dataset, arch, split_seed), "test")
    ws, models = store.read_weights(dataset, arch, epoch="final", model_ids=ids)
    accs = np.empty((len(ws), 1 + len(halves)))
    sizes = np.array([len(h) for h in halves], dtype=np.float64)
    with torch.no_grad():
        for i in range(len(ws)):
            model = build_model(ws.arch, models["activation"].iloc[i], float(models["dropout"].iloc[i]))
            model.load_state_dict(ws.state_dict(i))
            accs[i, 1:] = [evaluate_model(model, x[h], y[h])[0] for h in halves]
    accs[:, 0] = accs[:, 1:] @ sizes / sizes.sum()
    return models["test_acc"].to_numpy(dtype=np.float64), accs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="weight store root holding the zoo")
    p.add_argument("--zoo", required=True, help="dataset/arch, e.g. digits/arch1")
    p.add_argument("--max-test-images", type=int, default=None,
                   help="the zoo's cap on its test set (sne zoo's flag; default: the zoo's recorded protocol)")
    p.add_argument("--data-root", default="data/datasets")
    p.add_argument("--seed", type=int, default=0, help="seed of the halves and of the binomial draws")
    args = p.parse_args(argv)
    import torch
    from sne_core.data import load_dataset
    from sne_core.metrics import binomial_split_half_tau, kendall_tau, noise_ceiling_tau, split_half_ceiling_tau
    from sne_core.protocols import parse_zoo
    from sne_core.store import ZooStore

    torch.set_num_threads(1)            # thousands of tiny forward passes: threads only add overhead
    dataset, arch = parse_zoo(args.zoo)
    store = ZooStore(args.store)
    max_test = args.max_test_images
    if max_test is None:
        recorded = store.recorded_protocols(dataset, arch)
        if len(recorded) != 1:
            raise SystemExit(f"noise_ceiling: {args.zoo} records {len(recorded)} training protocols, so its test set "
                             "is not known: pass --max-test-images")
        max_test = recorded[0].get("max_test_images")
    data = load_dataset(dataset, args.data_root, max_test=max_test)
    n = len(data.y_test)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
    stored, accs = split_accuracies(store, dataset, arch, data.x_test, data.y_test,
                                   (perm[: n // 2], perm[n // 2:]))
    worst = int(np.argmax(np.abs(accs[:, 0] - stored)))
    if abs(accs[worst, 0] - stored[worst]) > 1e-6:
        raise SystemExit(f"noise_ceiling: {args.zoo}: a recomputed test accuracy is {accs[worst, 0]:.4f}, the stored "
                         f"one {stored[worst]:.4f}: not the zoo's test set; pass the zoo's --max-test-images "
                         f"(used {max_test})")
    half = kendall_tau(accs[:, 1], accs[:, 2])
    h = n // 2
    simulated = binomial_split_half_tau(stored, h, seed=args.seed)
    ceiling = split_half_ceiling_tau(half)
    print(f"zoo {args.zoo}: {len(stored)} test-split networks, {n} test images, halves of {h} and {n - h}")
    print(f"split-half tau: measured {half:.3f}, binomial model {simulated:.3f}")
    print(f"ceiling tau on all {n} images: from the measured halves {ceiling:.3f}, "
          f"binomial model {noise_ceiling_tau(stored, n, seed=args.seed):.3f}")
    print(f"noise_ceiling zoo={args.zoo} split_half_tau={half:.4f} ceiling_tau={ceiling:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
