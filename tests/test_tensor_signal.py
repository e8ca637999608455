"""scripts/tensor_signal.py on a synthetic zoo whose accuracy is set by the weights' scale: the
variance carries the signal and the mean none, and the all-tensor fit is the GBM baseline's."""
import sys
from pathlib import Path

import pandas as pd
import pytest

from sne_core.baselines.gbm import GBMPredictor
from sne_core.metrics import kendall_tau
from sne_core.protocols import load_zoo
from sne_core.store import ZooStore
from test_splits import write_synthetic_zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import tensor_signal  # noqa: E402


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("signal") / "store"
    write_synthetic_zoo(ZooStore(root), "mnist", "arch1", 200, zoo_seed=2)   # 80 training networks: GBM needs leaves of 20
    return root


def test_rows_find_the_scale_and_match_the_gbm_baseline(store_root, tmp_path, capsys):
    out = tmp_path / "signal.csv"
    assert tensor_signal.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--out", str(out)]) == 0
    rows = pd.read_csv(out).set_index("name")
    assert len(rows) == 1 + 8 + 7                      # all, Arch1's 8 tensors, 7 statistics
    # synthetic accuracy is a function of the weights' std: variance ranks, the mean does not
    assert rows.loc["var", "tau_alone"] > 0.8 and abs(rows.loc["mean", "tau_alone"]) < 0.5
    # the all-tensor row is the GBM baseline fitted on the same networks
    s = ZooStore(store_root)
    train, val, test = (load_zoo(s, "mnist/arch1", p) for p in ("train", "val", "test"))
    gbm = GBMPredictor([train.groups[0].arch], n_threads=1).fit(train.groups, train.y, val.groups, val.y, seed=0)
    assert rows.loc["every tensor", "tau_alone"] == pytest.approx(kendall_tau(gbm.predict(test.groups), test.y.numpy()))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("tensor_signal zoo=mnist/arch1 tau_all=")


def test_an_accuracy_floor_that_leaves_too_few_networks_is_refused(store_root):
    with pytest.raises(SystemExit, match=r"mnist/arch1:train has 0 networks with test accuracy >= --min-acc 0.99"):
        tensor_signal.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--min-acc", "0.99"])
