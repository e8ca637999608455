"""Zoo training throughput: the project's trainer vs a plain per-network PyTorch loop, same data.

    python -m bench.zoo_train [--models N] [--epochs E] [--max-images K] [--arch arch1] [--device auto]

Both train the same networks (same hyperparameters, initial weights and training subsets, from
sne_core.hparams / sne_core.zoo_network) and both evaluate at the same checkpoints (epoch 0 and
the last, or with --checkpoints protocol every protocol epoch: train subset and test set), so the
work is the same; only the execution differs.

  naive    one network at a time: build_model -> nn.Module, torch.optim, its training subset
           pre-shuffled into tensor batches per epoch, nn.Dropout, CE + L2 on kernels.
  trainer  sne_core.zoo.train_zoo with strategy "auto" (its calibration is timed too).

A model-epoch is one pass of one network over 60,000 images, so a network with train fraction f
on K images contributes epochs * f * K / 60,000 of them. On CUDA the naive loop runs on the first
--naive-models networks only (it is ~100x slower); its rate is per network, so that is fair.

Last line: `zoo_train speedup=<x> trainer=<model-epochs/s> naive=<model-epochs/s> device=<cpu|cuda> models=<N>`.
Targets: >= 1.5x on the 2-core CPU; >= 100x (600 model-epochs/s or more) on an H100/H200.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sne_core.archs import build_model, get_arch
from sne_core.data import load_dataset
from sne_core.hparams import sample_network
from sne_core.zoo import ZooConfig, prepare_data, train_zoo
from sne_core.zoo_network import generators, init_state, kernel_names, make_optimizer, subset_size, train_subset

IMAGES_PER_MODEL_EPOCH = 60_000


def naive_train(arch, hp, data, epochs: int, batch_size: int, eval_train_images: int, checkpoints=(0,)) -> float:
    """The plain loop for one network; returns its final test accuracy (so the work is not dead code)."""
    device = data.train_x.device
    g_init, g_data, _ = generators(hp, device)
    model = build_model(arch, hp.activation, hp.dropout)
    model.load_state_dict(init_state(arch, hp, g_init))
    model.to(device)
    opt = make_optimizer(hp, model.parameters())
    params = dict(model.named_parameters())
    kernels = [params[n] for n in kernel_names(arch)]
    subset = train_subset(hp, len(data.train_x), g_data)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            for x, y in ((data.train_x[subset[:eval_train_images].to(device)], data.train_y[subset[:eval_train_images].to(device)]),
                         (data.test_x, data.test_y)):
                correct = sum(int((model(x[s:s + 4096]).argmax(1) == y[s:s + 4096]).sum()) for s in range(0, len(x), 4096))
        model.train()
        return correct / len(data.test_x)

    if 0 in checkpoints:
        evaluate()
    for epoch in range(1, epochs + 1):
        order = subset[torch.randperm(len(subset), generator=g_data)].to(device)
        batches = [(data.train_x[order[s:s + batch_size]], data.train_y[order[s:s + batch_size]])
                   for s in range(0, len(order), batch_size)]            # pre-shuffled tensor batches
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + hp.l2 * sum(w.pow(2).sum() for w in kernels)
            if not torch.isfinite(loss):
                return float("nan")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch in checkpoints and epoch < epochs:
            evaluate()
    return evaluate()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=None, help="networks (default 8 on CPU, 512 on CUDA)")
    p.add_argument("--naive-models", type=int, default=None, help="networks the naive loop trains (default: all on CPU, 16 on CUDA)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-images", type=int, default=None, help="training images (default: all 60,000)")
    p.add_argument("--max-test-images", type=int, default=2000)
    p.add_argument("--eval-train-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=512, help="protocol: 512; the CPU zoos use 64")
    p.add_argument("--checkpoints", default="ends", choices=("ends", "protocol"),
                   help="'ends' (epoch 0 and the last) or 'protocol' (the zoo protocol's epochs up to --epochs, "
                        "as the zoos are built: 0, 1, 2, 3 and the last for a 10-epoch zoo)")
    p.add_argument("--arch", default="arch1")
    p.add_argument("--device", default="auto")
    p.add_argument("--strategy", default="auto", choices=("auto", "loop", "vectorized"))
    p.add_argument("--group-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the library's default, in process; on CPU try the core count)")
    p.add_argument("--amp", default="none", choices=("none", "bf16"))
    p.add_argument("--data-root", default="data/datasets")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    models = a.models or (512 if device.type == "cuda" else 8)
    naive_models = min(models, a.naive_models or (16 if device.type == "cuda" else models))
    arch = get_arch(a.arch)
    raw = load_dataset("mnist", a.data_root, max_train=a.max_images, max_test=a.max_test_images)
    config = ZooConfig("mnist", a.arch, models, a.epochs, seed=a.seed, workers=a.workers, max_images=a.max_images,
                       max_test_images=a.max_test_images, eval_train_images=a.eval_train_images,
                       device=str(device), strategy=a.strategy, group_size=a.group_size, amp=a.amp,
                       batch_size=a.batch_size, checkpoint_epochs=(0, a.epochs) if a.checkpoints == "ends" else None)
    data = prepare_data(config, raw, device)          # the same tensors for both
    hps = [sample_network(a.seed, i, arch.spec.bias_init) for i in range(models)]
    n_train = len(data.train_x)

    def model_epochs(hs) -> float:
        return sum(a.epochs * subset_size(h, n_train) for h in hs) / IMAGES_PER_MODEL_EPOCH

    print(f"zoo_train: {models} x {a.arch} on {n_train} MNIST images, {a.epochs} epoch(s), batch {a.batch_size}, "
          f"checkpoints {list(config.checkpoints())}, device={device}, torch threads={torch.get_num_threads()}", flush=True)
    sync(device)
    t0 = time.perf_counter()
    for h in hps[:naive_models]:
        naive_train(arch, h, data, a.epochs, config.batch_size, a.eval_train_images, config.checkpoints())
    sync(device)
    naive_s = time.perf_counter() - t0
    naive_rate = model_epochs(hps[:naive_models]) / naive_s
    print(f"naive:   {naive_models} networks, {model_epochs(hps[:naive_models]):.3f} model-epochs in {naive_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    results = train_zoo(config, raw, progress=False)
    sync(device)
    trainer_s = time.perf_counter() - t0
    trainer_rate = model_epochs(hps) / trainer_s
    print(f"trainer: {models} networks, {model_epochs(hps):.3f} model-epochs in {trainer_s:.1f} s "
          f"({sum(r.status != 'ok' for r in results)} diverged)", flush=True)
    print(f"zoo_train speedup={trainer_rate / naive_rate:.2f} trainer={trainer_rate:.3f} naive={naive_rate:.3f} "
          f"device={device.type} models={models}")


if __name__ == "__main__":
    main()
