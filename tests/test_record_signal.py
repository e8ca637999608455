"""scripts/record_signal.py on a synthetic zoo whose accuracy is set by each network's sampled learning
rate, which its weights (all of one scale) do not show: only that record lifts GBM, and the statistics
cannot read it."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sne_core.archs import get_arch
from sne_core.aux_targets import TARGETS
from sne_core.hparams import sample_network
from sne_core.records import STATUS_OK, Checkpoint, NetworkResult
from sne_core.store import ZooStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import record_signal  # noqa: E402
import tensor_signal  # noqa: E402


def lr_set_network(arch, model_id: int) -> NetworkResult:
    hp = sample_network(3, model_id, arch.spec.bias_init)
    g = torch.Generator().manual_seed(model_id)
    state = {p.name: 0.3 * torch.randn(p.shape, generator=g) for p in arch.layout}
    acc = float(0.1 + 0.8 * (np.log10(hp.lr) + 3.5) / 2.5)        # lr is log-uniform on [5e-4, 5e-2]
    return NetworkResult(hp, STATUS_OK, None, [Checkpoint(1, acc, 1.0, acc, 1.0, state)])


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("records") / "store"
    arch = get_arch("arch1")
    ZooStore(root).write_networks("mnist", arch, [lr_set_network(arch, i) for i in range(200)], 3)
    return root                                       # 80 training networks: GBM needs leaves of 20


def test_only_the_record_that_sets_the_accuracy_lifts_the_ranking(store_root, tmp_path, capsys):
    out = tmp_path / "records.csv"
    assert record_signal.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    rows = pd.read_csv(out).set_index("record")
    assert list(rows.index) == ["(statistics only)", *TARGETS, "(every hyperparameter)"]
    stats_only = rows.loc["(statistics only)", "tau_with"]
    assert tensor_signal.main(["--store", str(store_root), "--zoo", "mnist/arch1"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"tau_all={stats_only:.4f}")   # the same GBM baseline
    assert abs(stats_only) < 0.3                                   # the weights do not show the learning rate
    for name in ("log_lr", "train_acc", "(every hyperparameter)"):  # train accuracy is the accuracy here
        assert rows.loc[name, "tau_with"] > 0.8, name
    assert abs(rows.loc["log_lr", "readable"]) < 0.3 and rows.loc["log_lr", "kind"] == "hyperparameter"
    assert rows.loc["dropout", "tau_with"] < 0.3 and rows.loc["train_acc", "kind"] == "outcome"
    assert 0 <= rows.loc["optimizer", "readable"] <= 1            # a class record: the classifier's accuracy
    assert last == (f"record_signal zoo=mnist/arch1 tau_stats={stats_only:.4f} "
                    f"tau_hyperparameters={rows.loc['(every hyperparameter)', 'tau_with']:.4f}")


def test_an_accuracy_floor_that_leaves_too_few_networks_is_refused(store_root):
    with pytest.raises(SystemExit, match=r"record_signal: mnist/arch1:train has 0 networks with test accuracy"):
        record_signal.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--min-acc", "0.99"])
