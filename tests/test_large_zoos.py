"""scripts/large_zoos.py at smoke size: a real zoo built from MNIST, its fits in the pool, one row per
(zoo, method, seed) in rows.csv; a rerun trains only what rows.csv lacks, and a budget of 0 stops
cleanly with exit 3 (how a device call ends before it is killed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _large_zoos(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "large_zoos.py"), "--out", str(out), "--size", "smoke",
           "--models", "16", "--n-train", "6", "--zoos", "mnist/arch1", "--jobs", "1", "--device", "cpu",
           "--data-root", str(ROOT / "data" / "datasets"), "--quiet", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_rows_are_kept_and_a_rerun_trains_only_what_is_missing(tmp_path):
    out = tmp_path / "large"
    first = _large_zoos(out, "--methods", "statnn:2")
    assert first.returncode == 0, first.stderr[-3000:]
    rows = pd.read_csv(out / "rows.csv")
    assert sorted(zip(rows.method, rows.seed)) == [("statnn", 0), ("statnn", 1)]
    assert (rows.zoo == "mnist/arch1").all() and (rows.n_train == 6).all()
    assert (rows.n_test == 8).all() and rows.tau.notna().all()        # 16 networks: 8 test, 6 train, 2 val

    again = _large_zoos(out, "--methods", "statnn:2,gbm:1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("n_train=   6") == 1                     # GBM alone was trained
    rows2 = pd.read_csv(out / "rows.csv")
    assert len(rows2) == 3 and rows2.iloc[:2].equals(rows.iloc[:2])    # the earlier rows untouched
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.method) == {"statnn", "gbm"}
    assert summary.loc[summary.method == "statnn", "seeds"].item() == 2


def test_a_spent_budget_stops_with_exit_3(tmp_path):
    stopped = _large_zoos(tmp_path / "large", "--methods", "statnn:1", "--budget-s", "0", "--reserve-s", "0")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "out of budget before it was complete" in stopped.stdout
    assert not (tmp_path / "large" / "rows.csv").exists()
