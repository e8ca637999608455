"""Gradient-boosted trees on the StatNN statistics (Unterthiner et al.'s strongest predictor, SPEC §5).

scikit-learn's HistGradientBoostingRegressor (LightGBM's algorithm; LightGBM itself is not a
dependency). Its built-in early stopping holds out part of the *training* data, which is not the
protocol: SPEC says model selection uses the validation split only. So we grow `max_rounds` trees
without early stopping, score every stage on the given validation set (`staged_predict`), and
refit with the best round count. The refit reproduces the same first trees exactly: without row or
feature subsampling, histogram boosting is deterministic on identical data.
"""
from __future__ import annotations

import numpy as np
import torch

from sne_core.archs import Arch
from sne_core.baselines.common import arch_check, check_groups
from sne_core.baselines.statnn import DEFAULT_MAX_TENSORS, check_tensor_count, tensor_statistics
from sne_core.weights import WeightSet


def _targets(y, name: str, n: int) -> np.ndarray:
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"GBM: {name} has {y.shape[0]} targets for {n} networks")
    if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
        raise ValueError(f"GBM: {name} must be accuracies in [0, 1], got range [{y.min()}, {y.max()}]")
    return y


class GBMPredictor:
    """Not a torch module: trained by `fit`, not by the shared training loop."""

    def __init__(self, train_archs: list[Arch], max_tensors: int = DEFAULT_MAX_TENSORS, max_rounds: int = 500,
                 learning_rate: float = 0.05, max_leaf_nodes: int = 31, min_samples_leaf: int = 20,
                 l2_regularization: float = 0.0, n_threads: int | None = None):
        self.max_tensors = max_tensors
        # OpenMP threads for boosting; None = scikit-learn's default (all cores). On a shared,
        # oversubscribed CPU, 1 thread can be >10x faster than spinning OpenMP workers.
        self.n_threads = n_threads
        for a in train_archs:
            self.check_arch(a)
        self.hyper = dict(learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
                          min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization)
        self.max_rounds = max_rounds
        self.model = None
        self.n_rounds_: int | None = None          # chosen on validation
        self.val_mse_: np.ndarray | None = None    # validation MSE after each round

    @arch_check
    def check_arch(cls, self, arch: Arch) -> None:
        check_tensor_count(arch, DEFAULT_MAX_TENSORS if self is None else self.max_tensors, "GBM")

    def features(self, groups: list[WeightSet]) -> np.ndarray:
        check_groups(groups, self.check_arch)
        return torch.cat([tensor_statistics(ws, self.max_tensors) for ws in groups]).cpu().numpy()

    def fit(self, train_groups: list[WeightSet], y_train, val_groups: list[WeightSet], y_val,
            seed: int = 0) -> "GBMPredictor":
        return self.fit_features(self.features(train_groups), y_train, self.features(val_groups), y_val, seed)

    def fit_features(self, x_tr: np.ndarray, y_train, x_va: np.ndarray, y_val, seed: int = 0) -> "GBMPredictor":
        """`fit` on feature rows already computed (by `features`, or some of their columns: what
        scripts/tensor_signal.py uses to ask which tensors carry the signal)."""
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

        y_tr, y_va = _targets(y_train, "y_train", len(x_tr)), _targets(y_val, "y_val", len(x_va))

        def make(n_rounds: int):
            return HistGradientBoostingRegressor(max_iter=n_rounds, early_stopping=False, random_state=seed,
                                                 **self.hyper)

        with threadpool_limits(self.n_threads, user_api="openmp"):
            full = make(self.max_rounds).fit(x_tr, y_tr)
            self.val_mse_ = np.array([np.mean((p - y_va) ** 2) for p in full.staged_predict(x_va)])
            self.n_rounds_ = int(np.argmin(self.val_mse_)) + 1
            self.model = full if self.n_rounds_ == full.n_iter_ else make(self.n_rounds_).fit(x_tr, y_tr)
        return self

    def predict(self, groups: list[WeightSet]) -> np.ndarray:
        """Predicted accuracies in [0, 1], one per network, in group order."""
        return self.predict_features(self.features(groups))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """`predict` on feature rows with the columns `fit_features` was given."""
        if self.model is None:
            raise RuntimeError("GBMPredictor.predict called before fit")
        from threadpoolctl import threadpool_limits
        with threadpool_limits(self.n_threads, user_api="openmp"):
            return np.clip(self.model.predict(x), 0.0, 1.0)
