"""`sne train`: train a predictor on one zoo (several seeds), score it on the test split of
each test zoo, print the result table; the last line is `tau_mean=<mean over test zoos>`.

    sne train --method sne --store data/store --train-zoo mnist/arch1 \
              --test-zoos mnist/arch1,fashion_mnist/arch1 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import fields, replace

def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


# Flags that map one-to-one onto TrainConfig fields (None = keep the --config / default value).
_CONFIG_FLAGS = {"epochs": int, "batch_size": int, "lr": float, "weight_decay": float, "patience": int,
                 "invariance_weight": float, "ema_epochs": float, "rank_weight": float, "aux_weight": float,
                 "stats_weight": float, "tensor_stats_weight": float, "neuron_stats": _on_off, "members": int,
                 "lr_schedule": str, "device": str, "amp": str}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sne_core.methods import METHODS
    p.add_argument("--method", default="sne", choices=sorted(METHODS), help="predictor to train (default: sne)")
    p.add_argument("--store", required=True, help="weight store root holding the zoos (sne zoo --store ...)")
    p.add_argument("--train-zoo", required=True, help="training zoo, dataset/arch (e.g. mnist/arch1)")
    p.add_argument("--test-zoos", default=None,
                   help="comma-separated zoos to score on (their test splits); default: the training zoo")
    p.add_argument("--seeds", type=int, default=3, help="number of predictor seeds 0..N-1 (default 3)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the stored split every method shares (default 0)")
    p.add_argument("--config", default=None,
                   help="TrainConfig overrides as JSON, inline or a path to a .json file "
                        "(e.g. '{\"epochs\": 20, \"hyper\": {\"hidden\": 32}}'); flags below win over it")
    for name, typ in _CONFIG_FLAGS.items():
        choices = {"amp": ("none", "bf16", "auto"), "lr_schedule": ("constant", "cosine")}.get(name)
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, choices=choices,
                       metavar="{on,off}" if typ is _on_off else None, help=f"TrainConfig.{name}")
    p.add_argument("-v", "--verbose", action="store_true", help="print per-epoch metrics to stderr")


def _load_config(args):
    from sne_core.train import TrainConfig
    overrides = {}
    if args.config:
        text, source = args.config, "--config"
        if os.path.isfile(args.config):
            source = args.config
            with open(args.config) as f:
                text = f.read()
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e}); expected an object of TrainConfig fields") from e
        if not isinstance(overrides, dict):
            raise ValueError(f"{source}: expected a JSON object of TrainConfig fields, got {type(overrides).__name__}")
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"{source}: unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
    overrides.update({k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k) is not None})
    overrides["method"] = args.method
    return replace(TrainConfig(), **overrides)


def run(args) -> int:
    from sne_core.protocols import aggregate, evaluate, format_table, zoo_name
    from sne_core.store import ZooStore
    try:
        if not os.path.isdir(args.store):
            raise ValueError(f"--store {args.store}: no such directory (create zoos with `sne zoo --store ...`)")
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        config = _load_config(args)
        train_zoo = zoo_name(args.train_zoo)
        test_zoos = [zoo_name(z) for z in (args.test_zoos or train_zoo).split(",") if z.strip()]
    except ValueError as e:
        print(f"sne train: error: {e}", file=sys.stderr)
        return 2

    def log(seed, epoch, m):
        print(f"[{args.method} seed {seed}] epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in m.items()),
              file=sys.stderr)

    try:
        raw = evaluate(args.method, ZooStore(args.store), train_zoo, test_zoos, range(args.seeds), config,
                       split_seed=args.split_seed, log=log if args.verbose else None)
    except ValueError as e:    # StoreError, SplitError, MethodError, bad hyperparameters: all name the cause
        print(f"sne train: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    table = aggregate(raw)
    print(format_table(table))
    taus = [t for t in table["tau_mean"] if math.isfinite(t)]
    print(f"tau_mean={sum(taus) / len(taus) if taus else math.nan:.4f}")
    return 0
