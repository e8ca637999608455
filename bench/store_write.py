"""Growing a zoo in the weight store: one ZooStore that remembers validated reads vs re-validating.

    python -m bench.store_write [--parts 300] [--writes 20] [--nets-per-part 4]

Every `ZooStore.write_networks` checks the whole zoo first (one zoo seed, one chunk size, one
training protocol, which parts hold the ids it replaces). A zoo build writes one part per unit
of 4 networks, so a 2,000-network CPU zoo is ~500 writes.

- **fresh**: a new `ZooStore` for every write. It has nothing remembered, so each write reads
  and hashes every committed part: the store's behaviour before it remembered reads, and what
  a write still costs in a new process.
- **remembered**: one `ZooStore` for all writes, as `build_zoo` uses it. Its first write reads
  every part once (a resumed build pays this); later writes read only the parts added since.

Both start from copies of one store already holding `--parts` parts (Arch1 networks with random
weights, 5 checkpoints each, as in the 10-epoch CPU zoos) and add `--writes` parts to it.
Last line: `store_write speedup=<fresh/remembered> remembered_ms_per_write=<a> fresh_ms_per_write=<b> parts=<P>`.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from sne_core.archs import get_arch
from sne_core.hparams import sample_network
from sne_core.records import Checkpoint, NetworkResult
from sne_core.store import ZooStore

ZOO_SEED = 0
PROTOCOL = {"epochs": 10, "batch_size": 64, "checkpoints": [0, 1, 2, 3, 10]}


def networks(arch, first_id: int, n: int) -> list[NetworkResult]:
    out = []
    for mid in range(first_id, first_id + n):
        g = torch.Generator().manual_seed(mid)
        ckpts = [Checkpoint(e, 0.5, 1.0, 0.5, 1.0, {p.name: torch.randn(p.shape, generator=g) for p in arch.layout})
                 for e in PROTOCOL["checkpoints"]]
        out.append(NetworkResult(sample_network(ZOO_SEED, mid, arch.spec.bias_init), checkpoints=ckpts))
    return out


def grow(store_for_write, arch, first_part: int, writes: int, per_part: int) -> float:
    """Seconds to write `writes` parts, asking `store_for_write()` for the store before each."""
    t0 = time.perf_counter()
    for k in range(first_part, first_part + writes):
        store_for_write().write_networks("mnist", arch, networks(arch, k * per_part, per_part), ZOO_SEED,
                                         protocol=PROTOCOL)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=300, help="parts already in the zoo")
    p.add_argument("--writes", type=int, default=20, help="parts added and timed")
    p.add_argument("--nets-per-part", type=int, default=4)
    args = p.parse_args(argv)
    arch = get_arch("arch1")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        grow(lambda s=ZooStore(base): s, arch, 0, args.parts, args.nets_per_part)
        shutil.copytree(base, Path(tmp) / "fresh")
        shutil.copytree(base, Path(tmp) / "remembered")
        fresh = grow(lambda: ZooStore(Path(tmp) / "fresh"), arch, args.parts, args.writes, args.nets_per_part)
        kept = ZooStore(Path(tmp) / "remembered")
        remembered = grow(lambda: kept, arch, args.parts, args.writes, args.nets_per_part)
        assert ZooStore(Path(tmp) / "fresh").completed_ids("mnist", "arch1") == \
            ZooStore(Path(tmp) / "remembered").completed_ids("mnist", "arch1")
    a, b = 1000 * remembered / args.writes, 1000 * fresh / args.writes
    print(f"{args.writes} writes onto a zoo of {args.parts} parts ({args.parts * args.nets_per_part} networks): "
          f"remembered {a:.1f} ms/write (first write reads every part), fresh {b:.1f} ms/write")
    print(f"store_write speedup={b / a:.2f} remembered_ms_per_write={a:.1f} fresh_ms_per_write={b:.1f} "
          f"parts={args.parts}")


if __name__ == "__main__":
    main()
