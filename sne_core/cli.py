"""The `sne` command. Each subcommand lives in its own module with `add_arguments(parser)` and
`run(args) -> int`, imported only when used (so `sne zoo` never pays for the encoders)."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "zoo": ("sne_core.zoo_cli", "train one zoo of networks into the weight store"),
    "split": ("sne_core.split_cli", "create, check or grow the stored train/val/test split of one zoo"),
    "train": ("sne_core.train_cli", "train a predictor on one zoo and evaluate it on others"),
    # writes to MLflow, so it lives with the pipeline; named here only as a string, so sne_core
    # never imports it (and the GPU image, which has no MLflow, never needs it)
    "import-results": ("pipelines.import_results", "bring a results folder (e.g. from the GPU run) into the "
                                                   "store and MLflow"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sne", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, helptext) in SUBCOMMANDS.items():
        sub.add_parser(name, help=helptext, add_help=False)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        p = argparse.ArgumentParser(prog=f"sne {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
        module.add_arguments(p)
        return int(module.run(p.parse_args(argv[1:])) or 0)
    parser.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
