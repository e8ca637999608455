"""`sne zoo`: train one zoo (dataset x architecture) into the weight store, resuming what is there.

    sne zoo --dataset mnist --arch arch1 --models 64 --epochs 3 --max-images 5000 --store data/store

The last two lines printed are the summary: networks, diverged, test-accuracy quantiles.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sne_core.zoo import STRATEGIES, ZooConfig, build_zoo, default_workers, epochs_for_images


def _count(lo: int):
    """argparse type: an integer of at least `lo`, refused as a usage error before any dataset is loaded
    (ZooConfig would refuse it too, but only after the load, as a traceback)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {lo}, got {v}")
        return v
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset name (mnist, fashion_mnist, digits, ... or a registered one)")
    p.add_argument("--arch", required=True, help="architecture name (arch1, arch2, or the name in --arch-spec)")
    p.add_argument("--models", type=_count(1), required=True, help="networks in the zoo (model ids 0..N-1)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--epochs", type=_count(0), help="epochs over the (capped) training set")
    length.add_argument("--images-seen", type=_count(1), default=None,
                        help="or a budget in training images: epochs = images-seen / training images, rounded, "
                             "at least 1 (60000: one pass over MNIST, 42 over digits)")
    p.add_argument("--max-images", type=_count(1), default=None, help="cap on the training set (before each network's train fraction)")
    p.add_argument("--max-test-images", type=_count(1), default=None, help="cap on the test set used for test accuracy")
    p.add_argument("--batch-size", type=_count(1), default=512, help="protocol: 512; CPU-scale zoos use fewer images, so smaller batches give enough steps")
    p.add_argument("--eval-train-images", type=_count(1), default=10_000, help="cap on the images used for train accuracy/loss")
    p.add_argument("--store", default="data/store", help="weight store root (Parquet)")
    p.add_argument("--seed", type=int, default=0, help="zoo seed: with model_id it fixes every network")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES)
    p.add_argument("--group-size", type=_count(1), default=None, help="networks per vectorised step (default per device)")
    p.add_argument("--workers", type=_count(1), default=None,
                   help="CPU worker processes, one unit each (default: one per core on CPU; 1 = in process)")
    p.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast (CUDA only)")
    p.add_argument("--data-root", default="data/datasets")
    p.add_argument("--arch-spec", default=None, metavar="FILE", help="JSON spec of a user architecture (registered before use)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sne_core.archs import ArchSpec, register_arch
    from sne_core.data import load_dataset
    from sne_core.store import ZooStore

    if args.arch_spec:
        path = Path(args.arch_spec)
        if not path.is_file():
            raise SystemExit(f"sne zoo: --arch-spec {path}: no such file")
        spec = ArchSpec.from_json(path.read_text(), source=str(path))
        if spec.name != args.arch:
            raise SystemExit(f"sne zoo: {path}: field 'name' is {spec.name!r} but --arch is {args.arch!r}")
        register_arch(spec)
    data = load_dataset(args.dataset, args.data_root, max_train=args.max_images, max_test=args.max_test_images)
    epochs = args.epochs if args.images_seen is None else epochs_for_images(args.images_seen, len(data.y_train))
    config = ZooConfig(dataset=args.dataset, arch=args.arch, n_models=args.models, epochs=epochs, seed=args.seed,
                       batch_size=args.batch_size, eval_train_images=args.eval_train_images,
                       max_images=args.max_images, max_test_images=args.max_test_images, device=args.device,
                       strategy=args.strategy, group_size=args.group_size, amp=args.amp,
                       workers=args.workers or default_workers(args.device))
    summary = build_zoo(config, data, ZooStore(args.store), progress=not args.no_progress)
    print(summary.format())
    return 0
