"""Baseline accuracy predictors (SPEC §5), under the same contract as SNE.

Torch predictors: `Cls(train_archs, **hyper)`, `forward(groups: list[WeightSet]) -> logits [B]`,
`check_arch(arch)` (on the class or an instance) raising `UnsupportedArchitecture` with the reason,
and `prepare(train_groups)` to fit input standardisation on the training networks before training
(if skipped, the first training batch is used). GBM is not a torch module: `fit(...)` / `predict(...)`.

| name     | class              | reads                                                     |
| -------- | ------------------ | --------------------------------------------------------- |
| mlp      | MLPPredictor       | one parameter layout (the training arch's)                |
| deepsets | DeepSetsPredictor  | any conv/linear arch, mixed in one batch                  |
| statnn   | StatNNPredictor    | any arch with <= max_tensors tensors, mixed in one batch  |
| gbm      | GBMPredictor       | same as statnn                                            |
| nfn_np   | NFNNPPredictor     | global-pool archs (Arch1), the training layout only       |
| nfn_hnp  | NFNHNPPredictor    | same as nfn_np                                            |
"""
from sne_core.baselines.common import UnsupportedArchitecture
from sne_core.baselines.deepsets import DeepSetsPredictor
from sne_core.baselines.gbm import GBMPredictor
from sne_core.baselines.mlp import MLPPredictor
from sne_core.baselines.nfn import NFNHNPPredictor, NFNNPPredictor
from sne_core.baselines.statnn import StatNNPredictor, tensor_statistics

TORCH_BASELINES = {
    "mlp": MLPPredictor,
    "deepsets": DeepSetsPredictor,
    "statnn": StatNNPredictor,
    "nfn_np": NFNNPPredictor,
    "nfn_hnp": NFNHNPPredictor,
}
BASELINES = {**TORCH_BASELINES, "gbm": GBMPredictor}

__all__ = ["BASELINES", "TORCH_BASELINES", "UnsupportedArchitecture", "MLPPredictor", "DeepSetsPredictor",
           "StatNNPredictor", "GBMPredictor", "NFNNPPredictor", "NFNHNPPredictor", "tensor_statistics"]
