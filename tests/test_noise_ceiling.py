"""scripts/noise_ceiling.py on a real digits zoo (12 networks, one epoch): it re-evaluates the
stored final weights on the test set its recorded protocol names, finds the stored test accuracies
again, and refuses another test set."""
import re
import sys
from pathlib import Path

import pytest

from sne_core.data import load_dataset
from sne_core.store import ZooStore
from sne_core.zoo import ZooConfig, build_zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import noise_ceiling  # noqa: E402


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ceiling") / "store"
    config = ZooConfig("digits", "arch1", n_models=12, epochs=1, seed=0, max_images=300, eval_train_images=300, workers=1)
    build_zoo(config, load_dataset("digits", max_train=300), ZooStore(root), progress=False)
    return root


def test_split_half_of_the_zoos_own_test_set(store_root, capsys):
    assert noise_ceiling.main(["--store", str(store_root), "--zoo", "digits/arch1"]) == 0
    out = capsys.readouterr().out
    assert "6 test-split networks, 359 test images, halves of 179 and 180" in out
    half, ceiling = map(float, re.search(r"split_half_tau=(\S+) ceiling_tau=(\S+)$", out.strip()).groups())
    assert -1 <= half <= 1 and 0 <= ceiling <= 1


def test_another_test_set_is_refused(store_root):
    with pytest.raises(SystemExit, match=r"not the zoo's test set; pass the zoo's --max-test-images \(used 100\)"):
        noise_ceiling.main(["--store", str(store_root), "--zoo", "digits/arch1", "--max-test-images", "100"])


def test_a_zoo_without_a_recorded_protocol_needs_the_flag(tmp_path):
    from test_splits import write_synthetic_zoo
    write_synthetic_zoo(ZooStore(tmp_path / "s"), "digits", "arch1", 6)      # written without a protocol
    with pytest.raises(SystemExit, match="records 0 training protocols.*pass --max-test-images"):
        noise_ceiling.main(["--store", str(tmp_path / "s"), "--zoo", "digits/arch1"])
