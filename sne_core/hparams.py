"""Per-network hyperparameters, sampled as in the Small CNN Zoo protocol (SPEC §2).

Each network's draw depends on (zoo seed, model_id) alone, so any subset of a zoo can be
(re)trained on its own and gets the same networks: this is what makes resuming exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

OPTIMIZERS = ("sgd", "adam", "rmsprop")
INITS = ("he_normal", "orthogonal", "glorot_normal", "normal", "truncated_normal")
ACTIVATIONS = ("relu", "tanh")
TRAIN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
LR_RANGE = (5e-4, 5e-2)
L2_RANGE = (1e-8, 1e-2)
INIT_STD_RANGE = (1e-3, 0.5)
DROPOUT_RANGE = (0.0, 0.7)


@dataclass(frozen=True)
class HParams:
    model_id: int
    seed: int             # torch seed for this network's init, data subset, batch order, dropout
    optimizer: str
    lr: float
    l2: float             # on kernels only, never biases
    init: str
    init_std: float       # used by the std-based inits (normal, truncated_normal); recorded always
    bias_init: float
    dropout: float
    activation: str
    train_fraction: float

    def as_dict(self) -> dict:
        return asdict(self)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_network(zoo_seed: int, model_id: int, bias_init: float = 0.0) -> HParams:
    rng = np.random.default_rng([zoo_seed, model_id])
    return HParams(
        model_id=model_id,
        seed=int(rng.integers(0, 2**31 - 1)),
        optimizer=str(rng.choice(OPTIMIZERS)),
        lr=_log_uniform(rng, *LR_RANGE),
        l2=_log_uniform(rng, *L2_RANGE),
        init=str(rng.choice(INITS)),
        init_std=_log_uniform(rng, *INIT_STD_RANGE),
        bias_init=bias_init,
        dropout=float(rng.uniform(*DROPOUT_RANGE)),
        activation=str(rng.choice(ACTIVATIONS)),
        train_fraction=float(rng.choice(TRAIN_FRACTIONS)),
    )


def sample_hparams(zoo_seed: int, n: int, bias_init: float = 0.0) -> list[HParams]:
    """One record per network, model ids 0..n-1."""
    return [sample_network(zoo_seed, i, bias_init) for i in range(n)]
