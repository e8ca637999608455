"""scripts/learning_curve.py on a synthetic zoo written through the real store: nested training
subsets, fixed validation and test, one row per (method, size, seed)."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sne_core.protocols import load_zoo
from sne_core.store import ZooStore
from test_splits import write_synthetic_zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import learning_curve  # noqa: E402


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve") / "store"
    write_synthetic_zoo(ZooStore(root), "mnist", "arch1", 40, zoo_seed=4)
    return root


def test_training_subsets_are_nested_and_seeded(store_root):
    train = load_zoo(ZooStore(store_root), "mnist/arch1", "train")
    small, large = learning_curve.subsample(train, 5, seed=0), learning_curve.subsample(train, 12, seed=0)
    assert len(small) == 5 and len(large) == 12
    assert set(small.model_ids) < set(large.model_ids)
    assert np.array_equal(small.model_ids, learning_curve.subsample(train, 5, seed=0).model_ids)
    assert not np.array_equal(small.model_ids, learning_curve.subsample(train, 5, seed=1).model_ids)
    i = np.searchsorted(train.model_ids, small.model_ids)          # targets travel with their networks
    assert np.allclose(small.y.numpy(), train.y.numpy()[i])
    with pytest.raises(SystemExit, match="asks for 99 training networks"):
        learning_curve.subsample(train, 99, seed=0)


def test_curve_rows_share_validation_and_test(store_root, tmp_path, capsys):
    rc = learning_curve.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--sizes", "8,16",
                              "--methods", "statnn,gbm", "--seeds", "2", "--size", "smoke", "--jobs", "1",
                              "--out", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "curve.csv")
    assert rc == 0 and len(rows) == 2 * 2 * 2
    assert sorted(rows.n_train.unique()) == [8, 16]
    assert rows.n_test.nunique() == 1 and rows.n_val.nunique() == 1 and rows.n_test.iloc[0] == 20
    assert rows.loc[rows.method == "statnn", "tau"].notna().all()
    # the parts of tau: tau-a within and across the collapsed and learned test networks
    regions = rows[["tau_below", "tau_above", "tau_across"]].to_numpy(float)
    assert np.all(np.isnan(regions) | (np.abs(regions) <= 1)) and np.isfinite(regions).any()
    # the fit on its own training networks: StatNN's MLP orders the networks it was trained on
    train_tau = rows.loc[rows.method == "statnn", "train_tau"].to_numpy(float)
    assert np.all(np.isfinite(train_tau)) and np.all(np.abs(train_tau) <= 1)
    fitted = rows[["train_tau", "train_tau_above"]].to_numpy(float)
    assert np.all(np.isnan(fitted) | (np.abs(fitted) <= 1))
    out = capsys.readouterr().out
    assert "zoo mnist/arch1: validation" in out and "train_tau_mean" in out


def test_first_seed_adds_seeds_to_an_earlier_run(store_root, tmp_path):
    """--first-seed 1 --seeds 1 is the second seed of a --seeds 2 run: same training subset, same row."""
    common = ["--store", str(store_root), "--zoo", "mnist/arch1", "--sizes", "8", "--methods", "statnn",
              "--size", "smoke", "--jobs", "1"]
    learning_curve.main(common + ["--seeds", "2", "--out", str(tmp_path / "both")])
    learning_curve.main(common + ["--seeds", "1", "--first-seed", "1", "--out", str(tmp_path / "second")])
    both, second = (pd.read_csv(tmp_path / d / "curve.csv") for d in ("both", "second"))
    assert second.seed.tolist() == [1] and both.r2.nunique() == 2     # the seeds differ, so the row tells them apart
    pd.testing.assert_frame_equal(second.drop(columns="fit_seconds"),
                                  both[both.seed == 1].drop(columns="fit_seconds").reset_index(drop=True))


def test_hyper_reaches_the_predictor(store_root):
    # an invalid SNE setting must fail in SNE's own check, which proves --hyper got through to it
    with pytest.raises(ValueError, match="log_floor must be >= 0"):
        learning_curve.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--sizes", "8", "--methods", "sne",
                             "--seeds", "1", "--size", "smoke", "--jobs", "1", "--hyper", '{"sne": {"log_floor": -1}}'])


def test_train_overrides_reach_the_config(store_root):
    # patience=0 is refused by TrainConfig's own check: proof that --train got through to it
    args = ["--store", str(store_root), "--zoo", "mnist/arch1", "--sizes", "8", "--methods", "statnn", "--seeds", "1",
            "--size", "smoke", "--jobs", "1"]
    with pytest.raises(ValueError, match="TrainConfig.patience must be an integer >= 1, got 0"):
        learning_curve.main(args + ["--train", '{"patience": 0}'])
    with pytest.raises(SystemExit, match="--train takes a JSON object of TrainConfig fields"):
        learning_curve.main(args + ["--train", '{"seed": 3}'])


def test_composite_rows_score_each_part_alone(store_root, tmp_path):
    rc = learning_curve.main(["--store", str(store_root), "--zoo", "mnist/arch1", "--sizes", "16",
                              "--methods", "statnn,sne_statnn", "--seeds", "1", "--size", "smoke", "--jobs", "1",
                              "--out", str(tmp_path), "--hyper", '{"sne_statnn": {"sne": {"hidden": 16, "heads": 2}}}'])
    rows = pd.read_csv(tmp_path / "curve.csv").set_index("method")
    assert rc == 0 and {"sne_tau", "statnn_tau"} <= set(rows.columns)
    # the composite's StatNN part is the same fit as StatNN's own row: same seed, data and settings
    assert rows.loc["sne_statnn", "statnn_tau"] == pytest.approx(rows.loc["statnn", "tau"])
    assert rows.loc["sne_statnn", "statnn_r2"] == pytest.approx(rows.loc["statnn", "r2"])
    assert rows.loc["sne_statnn", "statnn_val_tau"] == pytest.approx(rows.loc["statnn", "val_tau"])
    assert rows.loc["sne_statnn", "statnn_tau_above"] == pytest.approx(rows.loc["statnn", "tau_above"])
    assert np.isfinite(rows.loc["sne_statnn", ["tau", "sne_tau", "sne_r2", "sne_val_tau"]].astype(float)).all()


def test_a_composite_override_merges_into_each_part():
    from paper_tables import Size
    size = Size(models=8, epochs=1, max_images=8, max_test_images=8, zoo_batch=8, eval_train_images=8, train_batch=4,
                train_epochs=1, patience=1, lr=1e-3, hyper={"sne": {"hidden": 32, "heads": 2}, "statnn": {"width": 8}})
    hyper = size.train_config("sne_statnn", {"sne": {"hidden": 64}}).hyper
    assert hyper == {"sne": {"hidden": 64, "heads": 2}, "statnn": {"width": 8}}   # was: sne's heads dropped
    assert size.train_config("sne", {"heads": 4}).hyper == {"hidden": 32, "heads": 4}


def test_a_size_takes_epochs_or_an_images_seen_budget():
    from paper_tables import SIZES, Size
    assert SIZES["cpu-pass"].zoo_epochs(60_000) == 1 and SIZES["cpu-pass"].zoo_epochs(1_438) == 42
    assert SIZES["cpu-large"].zoo_epochs(4_000) == 10
    kw = dict(models=8, max_images=8, max_test_images=8, zoo_batch=8, eval_train_images=8, train_batch=4,
              train_epochs=1, patience=1, lr=1e-3)
    for epochs, images_seen in ((None, None), (1, 1000)):
        with pytest.raises(ValueError, match="exactly one of fields 'epochs' and 'images_seen'"):
            Size(epochs=epochs, images_seen=images_seen, **kw)


def test_a_curve_resumes_where_it_stopped_and_refuses_other_settings(store_root, tmp_path, capfd):
    """The same command again trains only the fits curve.csv lacks; the kept rows are not refit."""
    common = ["--store", str(store_root), "--zoo", "mnist/arch1", "--sizes", "8", "--methods", "statnn",
              "--size", "smoke", "--jobs", "1", "--out", str(tmp_path)]
    learning_curve.main(common + ["--seeds", "1"])
    first = pd.read_csv(tmp_path / "curve.csv")
    capfd.readouterr()
    learning_curve.main(common + ["--seeds", "2"])
    out = capfd.readouterr().out
    assert "1 fits kept from" in out and "seed=1" in out and "seed=0" not in out
    both = pd.read_csv(tmp_path / "curve.csv")
    assert both.seed.tolist() == [0, 1]
    pd.testing.assert_frame_equal(both[both.seed == 0], first)      # fit_seconds too: kept, not trained again
    # the fit itself is kept too: a row lost after its fit finished comes back from --out/fits, not from training
    assert (tmp_path / "fits" / "statnn-n8-seed1" / "fit-statnn-seed1.pt").is_file()
    both[both.seed == 0].to_csv(tmp_path / "curve.csv", index=False)
    learning_curve.main(common + ["--seeds", "2"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "curve.csv"), both)
    with pytest.raises(SystemExit, match=r"curve.json: field 'train' is \{\} there but \{'lr': 0.01\}"):
        learning_curve.main(common + ["--seeds", "2", "--train", '{"lr": 0.01}'])
    both.drop(columns="tau").to_csv(tmp_path / "curve.csv", index=False)
    with pytest.raises(SystemExit, match=r"curve.csv lacks column\(s\) \['tau'\]"):
        learning_curve.main(common + ["--seeds", "2"])
    (tmp_path / "curve.json").unlink()
    with pytest.raises(SystemExit, match="has no curve.json beside it"):
        learning_curve.main(common + ["--seeds", "2"])
