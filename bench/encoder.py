"""SNE training throughput and peak memory vs network size, at one chunk budget (SPEC §4).

    python -m bench.encoder [--budget 256] [--batch 8] [--steps 2] [--device auto]

For networks of ~5k (Arch1), ~50k and ~500k parameters (random weights), one forward + backward
of SNE on a batch of `--batch` networks: networks/s and peak memory. Each size runs in its own
subprocess so its peak is its own. Then NFN-HNP (sne_core.baselines.nfn) on Arch1, side by side.

Peak memory
- CUDA: torch.cuda.max_memory_allocated() minus the memory allocated before the step.
- CPU: torch has no allocator statistics on CPU and tracemalloc does not see its buffers, so we
  read the process's peak resident set (getrusage ru_maxrss, a high-water mark) minus its current
  RSS just before the timed steps. That baseline is taken after one warm-up step on two
  Arch1 networks, so one-time costs (thread pools, kernel caches) are not charged to any size.
  The children run with MALLOC_MMAP_THRESHOLD_=65536: glibc's adaptive threshold otherwise serves
  freed activation buffers from a fragmented heap it never returns, so RSS kept growing with the
  number of streamed slices although the live tensors did not (measured: 30 checkpointed SAB slices
  showed +165 MB RSS by default, +18 MB -- their saved inputs -- with the fixed threshold).

Last line: `encoder peak_mem_ratio_500k_vs_5k=<r> sne_nets_per_s=<x> device=<cpu|cuda>`, where
sne_nets_per_s is the 5k (Arch1) throughput. Target: ratio <= 2 (memory flat in network size).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = {
    "5k": "arch1",  # 4,970 parameters
    "50k": {"name": "bench50k", "layers": [
        {"type": "conv", "out": 16, "kernel": 5}, {"type": "maxpool", "kernel": 2}, {"type": "act"},
        {"type": "conv", "out": 32, "kernel": 5}, {"type": "maxpool", "kernel": 2}, {"type": "act"},
        {"type": "conv", "out": 96, "kernel": 3}, {"type": "act"}, {"type": "gap"},
        {"type": "linear", "out": 64}, {"type": "act"}, {"type": "linear", "out": 10}]},
    "500k": {"name": "bench500k", "layers": [
        {"type": "conv", "out": 32, "kernel": 5}, {"type": "maxpool", "kernel": 2}, {"type": "act"},
        {"type": "conv", "out": 128, "kernel": 5}, {"type": "maxpool", "kernel": 2}, {"type": "act"},
        {"type": "conv", "out": 288, "kernel": 3}, {"type": "act"}, {"type": "gap"},
        {"type": "linear", "out": 128}, {"type": "act"}, {"type": "linear", "out": 10}]},
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _arch(key):
    from sne_core.archs import get_arch, parse_spec, resolve
    return get_arch(key) if isinstance(key, str) else resolve(parse_spec(key, "bench.encoder"))


def _nets(arch, n, device, seed=0):
    import torch
    from sne_core.weights import WeightSet
    g = torch.Generator().manual_seed(seed)
    return WeightSet(arch, [torch.randn(n, *p.shape, generator=g) * 0.1 for p in arch.layout]).to(device)


def measure(method: str, size: str, batch: int, steps: int, budget: int, device: str) -> dict:
    """One configuration, in this process: build, warm up on two Arch1 networks, time `steps` steps."""
    import torch
    from sne_core.encoders.sne import SNE, SNEConfig
    torch.manual_seed(0)
    arch = _arch(SIZES[size])
    if method == "sne":
        model = SNE(SNEConfig(chunk_budget=budget)).to(device)
    else:
        from sne_core.baselines.nfn import NFNHNPPredictor
        model = NFNHNPPredictor([arch]).to(device)
    groups = [_nets(arch, batch, device)]
    # two networks, not one: SNE's BatchNorm on the network codes cannot train on a batch of one
    warm = [_nets(_arch("arch1") if method == "sne" else arch, 2, device, seed=1)]
    if method == "sne":
        # warm up the streaming path too: its first checkpoint() imports torch._dynamo (~200 MB of
        # Python modules), which would otherwise be charged to the sizes that stream
        model.config.chunk_budget = 1
        model(warm).sum().backward()
        model.config.chunk_budget = budget
    model(warm).sum().backward()
    model.zero_grad(set_to_none=True)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    t0 = time.perf_counter()
    for step in range(steps):
        logits = model(groups)
        (logits - 0.5).pow(2).mean().backward()  # stands in for the BCE loss: same graph, same memory
        model.zero_grad(set_to_none=True)
        if step == 0:  # the peak of one training step (later CPU steps add only heap fragmentation)
            if cuda:
                torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) if cuda else \
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"method": method, "size": size, "arch": arch.name, "n_params": arch.n_params, "batch": batch,
            "nets_per_s": steps * batch / dt, "peak_mb": max(peak, 0) / 2**20}


def run_child(method, size, args, device) -> dict | None:
    cmd = [sys.executable, "-m", "bench.encoder", "--child", method, size, "--batch", str(args.batch),
           "--steps", str(args.steps), "--budget", str(args.budget), "--device", device]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"  {method} {size}: failed\n{out.stderr.strip()[-2000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.encoder", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=256,
                   help="SNE chunk_budget (chunks per chunk-encoder slice); 256 ~ one batch of 8 Arch1 nets (208 chunks)")
    p.add_argument("--batch", type=int, default=8, help="networks per step, the same for every size")
    p.add_argument("--steps", type=int, default=2, help="timed forward+backward steps per size")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.child:
        print(json.dumps(measure(*args.child, args.batch, args.steps, args.budget, device)))
        return 0

    print(f"SNE forward+backward, batch {args.batch} networks, chunk_budget {args.budget}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    rows = {}
    for size in SIZES:
        r = run_child("sne", size, args, device)
        if r:
            rows[size] = r
            print(f"  SNE     {size:>4} ({r['arch']}, {r['n_params']:,} params): {r['nets_per_s']:8.2f} nets/s, "
                  f"peak {r['peak_mb']:8.1f} MB")
    try:
        import sne_core.baselines.nfn  # noqa: F401
        r = run_child("nfn_hnp", "5k", args, device)
        if r:
            print(f"  NFN-HNP   5k (arch1): {r['nets_per_s']:8.2f} nets/s, peak {r['peak_mb']:8.1f} MB; "
                  f"SNE/NFN-HNP throughput = {rows['5k']['nets_per_s'] / r['nets_per_s']:.2f}" if "5k" in rows else "")
    except ImportError as e:
        print(f"  NFN-HNP: skipped ({e})")
    if "5k" not in rows or "500k" not in rows:
        print("encoder run incomplete")
        return 1
    ratio = rows["500k"]["peak_mb"] / max(rows["5k"]["peak_mb"], 1e-9)
    print(f"encoder peak_mem_ratio_500k_vs_5k={ratio:.2f} sne_nets_per_s={rows['5k']['nets_per_s']:.2f} device={device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
