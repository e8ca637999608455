"""The GPU route end to end, at smoke size: `scripts/paper_tables.py` (library only, as on the GPU
machine) writes a results folder; `sne import-results` checks it and brings it into the store and
MLflow; a tampered folder is refused before anything is written."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.import_results import import_results
from pipelines.mlflow_tracking import TASK
from pipelines.resources import MLflowTracker
from sne_core.cli import main as sne_main
from sne_core.metrics import summarize
from sne_core.methods import defaults_fingerprint
from sne_core.results import (CSV_COLUMNS, PREDICTION_COLUMNS, TABLES, ResultsError, predictions_frame,
                              read_predictions, read_results, write_predictions)
from sne_core.store import ZooStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from paper_tables import elapsed_s, job_path, predictions_path, seed_path  # noqa: E402
from test_store import refused_byte_flips  # noqa: E402


def _paper_tables_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "paper_tables.py"), "--size", "smoke", "--out", str(out),
            "--data-root", str(ROOT / "data" / "datasets"), "--datasets", "digits,mnist", "--seeds", "2",
            "--jobs", "1", "--quiet", *extra]


def _paper_tables(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_paper_tables_cmd(out, *extra), cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "smoke-run"
    done = _paper_tables(out, "--methods", "statnn,sne")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_an_interrupted_run_resumes_to_the_same_rows(results, tmp_path):
    """A device call out of time exits 3 and leaves finished work in place; the next call trains only
    what is missing and ends with the rows of an uninterrupted run."""
    out, store = tmp_path / "resumed", str(results / "store")     # the fixture's zoos are complete
    stopped = _paper_tables(out, "--store", store, "--methods", "statnn,sne", "--budget-s", "0")
    assert stopped.returncode == 3 and "run the same command again" in stopped.stdout
    assert not (out / "raw.csv").exists()
    assert _paper_tables(out, "--store", store, "--methods", "statnn").returncode == 0
    last = _paper_tables(out, "--store", store, "--methods", "statnn,sne")
    assert last.returncode == 0, last.stderr[-3000:]
    assert "jobs: 4 of 8 done before this call, 4 to run" in last.stdout      # only SNE trained now
    _, raw, meta = read_results(out)
    _, reference, _ = read_results(results)
    key = ["method", "train_zoo", "test_zoo", "seed"]
    a, b = raw.sort_values(key).reset_index(drop=True), reference.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    np.testing.assert_allclose(a["tau"].to_numpy(float), b["tau"].to_numpy(float), atol=1e-6)
    assert len(meta["calls"]) == 3 and meta["wall_s_total"] == pytest.approx(sum(c["wall_s_total"] for c in meta["calls"]))


def test_a_job_stopped_between_seeds_goes_on_at_its_next_seed(results, tmp_path):
    """A job killed after its first seed (a session ending mid-job) keeps that seed: the next call trains the
    second seed only and ends with the rows of an uninterrupted run."""
    out, store = tmp_path / "seeds", str(results / "store")
    shutil.copytree(results, out, ignore=shutil.ignore_patterns("store"))
    (folder,) = out.glob("jobs-*")
    kept, job = seed_path(folder, "sne", "digits/arch1", 0), job_path(folder, "sne", "digits/arch1")
    reference, kept_bytes = pd.read_csv(job), kept.read_bytes()
    second = seed_path(folder, "sne", "digits/arch1", 1)
    for f in (job, predictions_path(folder, "sne", "digits/arch1"), second, second.with_suffix(".preds.parquet")):
        f.unlink()
    again = _paper_tables(out, "--store", store, "--methods", "statnn,sne")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "jobs: 7 of 8 done before this call, 1 to run, 1 at a time, 1 of their seeds kept" in again.stdout
    assert "trained on digits/arch1         seed 1" in again.stdout and "seed 0" not in again.stdout
    assert kept.read_bytes() == kept_bytes                       # seed 0 was not trained again
    resumed = pd.read_csv(job)
    pd.testing.assert_frame_equal(resumed.drop(columns="fit_seconds"), reference.drop(columns="fit_seconds"))
    preds = read_predictions(predictions_path(folder, "sne", "digits/arch1"))
    before = read_predictions(results / "predictions.parquet").query("method == 'sne' and train_zoo == 'digits/arch1'")
    pd.testing.assert_frame_equal(preds.reset_index(drop=True), before.reset_index(drop=True))
    # a seed's fits (an ensemble's, member by member) are kept only until its rows are written (tests/test_train.py: resume)
    ens = _paper_tables(tmp_path / "ens", "--store", store, "--methods", "statnn", "--members", "2",
                        "--train-zoos", "digits/arch1")
    assert ens.returncode == 3 and "jobs: 0 of 4 done before this call, 1 to run" in ens.stdout, ens.stderr[-3000:]
    (folder,) = (tmp_path / "ens").glob("jobs-*")
    assert job_path(folder, "statnn", "digits/arch1").is_file() and not list(folder.glob("*.fits"))


def test_kill_stops_the_running_jobs_at_once_and_records_the_call(results, tmp_path):
    """SIGTERM to the parent alone (`kill <pid>` on a background run; handled as Ctrl-C): its job workers are
    stopped mid-fit rather than left to finish their jobs, the call's time is kept in calls.json, and the exit
    status is 130. Two jobs of 2 seeds x 2 members (8 fits); the signal goes when the first epoch is on disk.
    (SIGTERM, not SIGINT: a test run launched with `&` from a script inherits an ignored SIGINT.)"""
    out, store = tmp_path / "stopped", str(results / "store")
    proc = subprocess.Popen(_paper_tables_cmd(out, "--store", store, "--methods", "sne", "--jobs", "2", "--members", "2",
                                              "--train-zoos", "digits/arch1,mnist/arch1"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while not list(out.glob("jobs-*/*.fits/seed*/*.pt")) and proc.poll() is None and time.time() - t0 < 300:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted: finished zoo units, seeds, fits and a fit's finished epochs are kept" in stdout
    (folder,) = out.glob("jobs-*")
    (call,) = json.loads((folder / "calls.json").read_text())
    assert call["interrupted"] is True and 0 < call["wall_s_zoos"] <= call["wall_s_total"]
    assert not all(job_path(folder, "sne", z).is_file() for z in ("digits/arch1", "mnist/arch1"))
    t0 = time.time()            # no worker of the stopped call is left running (multiprocessing's
    while time.time() - t0 < 10:  # resource tracker leaves a moment after the parent)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(subprocess.run(["ps", "-o", "pid,stat,cmd", "-g", str(proc.pid)], capture_output=True, text=True).stdout)


@pytest.mark.parametrize("stage", ["compose", "tables"])
def test_an_interrupt_after_the_jobs_is_caught_too(results, tmp_path, monkeypatch, stage):
    """Ctrl-C while a composite is composed, or while the tables are written: exit status 130 with what to do,
    the call recorded once, and the next call ends the run (in this process: nothing is trained, every job is
    done)."""
    import paper_tables
    import sne_core.results

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    run = tmp_path / "run"
    shutil.copytree(results, run)
    (run / "tables.md").unlink()
    argv = _paper_tables_cmd(run, "--store", str(run / "store"), "--methods", "statnn,sne,sne_statnn")[2:]
    sigterm = signal.getsignal(signal.SIGTERM)               # main() handles SIGTERM as Ctrl-C: not in pytest after
    try:
        with monkeypatch.context() as patch:
            patch.setattr(*((paper_tables, "_compose_one") if stage == "compose" else (sne_core.results, "write_results")),
                          stop)
            assert paper_tables.main(argv) == paper_tables.INTERRUPTED
            (folder,) = run.glob("jobs-*")
            calls = json.loads((folder / "calls.json").read_text())
            assert len(calls) == len(json.loads((next(results.glob("jobs-*")) / "calls.json").read_text())) + 1
            assert calls[-1].get("interrupted", False) is (stage == "compose")
            assert not (run / "tables.md").exists()
        assert paper_tables.main(argv) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert "sne_statnn" in (run / "tables.md").read_text()


def test_partial_cuts_the_tables_of_the_finished_jobs_and_names_the_rest(results, tmp_path):
    """--partial with jobs left: tables of the finished jobs only, the rest named in run.json, status still 3."""
    out, store = tmp_path / "partial", str(results / "store")
    assert _paper_tables(out, "--store", store, "--methods", "statnn").returncode == 0
    part = _paper_tables(out, "--store", store, "--methods", "statnn,sne", "--budget-s", "0", "--partial")
    assert part.returncode == 3, part.stderr[-3000:]
    _, raw, meta = read_results(out)
    assert set(raw.method) == {"statnn"} and meta["methods"] == ["statnn", "sne"]
    assert sorted(meta["jobs_missing"]) == sorted(f"sne on {z}" for z in set(raw.train_zoo))
    _, full, _ = read_results(results)
    ref = full[full.method == "statnn"].sort_values(["train_zoo", "test_zoo", "seed"])
    np.testing.assert_allclose(raw.sort_values(["train_zoo", "test_zoo", "seed"])["tau"].to_numpy(float),
                               ref["tau"].to_numpy(float), atol=1e-6)
    nothing = _paper_tables(tmp_path / "empty", "--store", store, "--methods", "sne", "--budget-s", "0", "--partial")
    assert nothing.returncode == 3 and not (tmp_path / "empty" / "raw.csv").exists()


def test_train_zoos_split_a_run_and_max_train_caps_its_training_networks(results, tmp_path):
    out, store = tmp_path / "parts", str(results / "store")
    part = _paper_tables(out, "--store", store, "--methods", "statnn", "--max-train", "2", "--train-zoos", "digits/arch1")
    assert part.returncode == 3 and "jobs: 0 of 4 done before this call, 1 to run" in part.stdout
    rest = _paper_tables(out, "--store", store, "--methods", "statnn", "--max-train", "2")
    assert rest.returncode == 0 and "jobs: 1 of 4 done before this call, 3 to run" in rest.stdout, rest.stderr[-3000:]
    _, raw, meta = read_results(out)
    _, full, _ = read_results(results)
    assert (raw.n_train == 2).all() and (full.n_train > 2).all() and meta["max_train"] == 2
    assert meta["wall_s_elapsed"] == elapsed_s(meta["calls"]) and 0 < meta["wall_s_elapsed"] <= meta["wall_s_total"]
    bad = _paper_tables(out, "--store", store, "--methods", "statnn", "--train-zoos", "mnist/arch9")
    assert bad.returncode == 2 and "--train-zoos ['mnist/arch9'] not among the zoos" in bad.stderr
    zero = _paper_tables(out, "--store", store, "--methods", "statnn", "--max-train", "0")
    assert zero.returncode == 2 and "--max-train must be at least 1, got 0" in zero.stderr


def test_train_seeds_split_a_job_and_the_last_call_makes_its_file(results, tmp_path):
    """A job split by --train-seeds across calls: a call leaves the job's file to whichever call finishes
    its last seed, and the rows are those of an unsplit run."""
    out, store = tmp_path / "seeds", str(results / "store")
    one = _paper_tables(out, "--store", store, "--methods", "statnn", "--train-zoos", "digits/arch1", "--train-seeds", "1")
    folder = next(out.glob("jobs-*"))
    assert one.returncode == 3, one.stderr[-3000:]
    assert seed_path(folder, "statnn", "digits/arch1", 1).is_file() and not seed_path(folder, "statnn", "digits/arch1", 0).exists()
    assert not job_path(folder, "statnn", "digits/arch1").exists()
    other = _paper_tables(out, "--store", store, "--methods", "statnn", "--train-seeds", "0,0")
    assert other.returncode == 3 and "jobs: 0 of 4 done before this call, 4 to run" in other.stdout
    assert job_path(folder, "statnn", "digits/arch1").is_file()        # its seed 1 came from the first call
    assert not job_path(folder, "statnn", "mnist/arch1").exists()      # seed 0 only: the others wait for seed 1
    rest = _paper_tables(out, "--store", store, "--methods", "statnn")
    assert rest.returncode == 0 and "jobs: 1 of 4 done before this call, 3 to run, 1 at a time, 3 of their seeds kept" in rest.stdout
    key = ["train_zoo", "test_zoo", "seed"]
    _, raw, _ = read_results(out)
    _, full, _ = read_results(results)
    ref = full[full.method == "statnn"].sort_values(key)
    assert len(raw) == len(ref) and set(raw.seed) == {0, 1}
    np.testing.assert_allclose(raw.sort_values(key)["tau"].to_numpy(float), ref["tau"].to_numpy(float), atol=1e-6)
    bad = _paper_tables(out, "--store", store, "--methods", "statnn", "--train-seeds", "1,2")
    assert bad.returncode == 2 and "--train-seeds [2] not among the seeds [0, 1] (--seeds 2)" in bad.stderr
    word = _paper_tables(out, "--store", store, "--methods", "statnn", "--train-seeds", "first")
    assert word.returncode == 2 and "invalid seed list value: 'first'" in word.stderr


def test_elapsed_time_counts_side_by_side_calls_once():
    call = lambda start, s: {"started_utc": f"2026-12-02T01:{start}Z", "wall_s_total": s}
    assert elapsed_s([call("00:00", 100.0)]) == 100.0
    # two processes split by --train-zoos, overlapping from 01:01:40 to 01:01:50, then a later call
    side_by_side = [call("00:00", 110.0), call("01:40", 60.0), call("10:00", 5.0)]
    assert elapsed_s(side_by_side) == 160.0 + 5.0
    assert elapsed_s([call("00:00", 100.0), call("00:10", 20.0)]) == 100.0      # one call inside another


def test_predictions_give_back_every_scored_cell(results):
    """predictions.parquet holds every test network of every scored cell, and the cell's tau follows
    from it exactly: a composite or an error analysis needs no refit."""
    preds = read_predictions(results / "predictions.parquet")
    _, raw, meta = read_results(results)
    assert meta["predictions_jobs"] == "8 of 8"
    key = ["method", "train_zoo", "test_zoo", "seed"]
    cells = dict(list(preds.groupby(key)))
    scored = raw[np.isfinite(raw["tau"].to_numpy(float))]
    assert len(scored) and set(cells) == set(map(tuple, scored[key].itertuples(index=False)))
    for row in scored.itertuples(index=False):
        cell = cells[(row.method, row.train_zoo, row.test_zoo, row.seed)]
        assert len(cell) == row.n_test and cell["model_id"].is_unique
        assert summarize(cell["y_pred"].to_numpy(), cell["y_true"].to_numpy())["tau"] == pytest.approx(row.tau, abs=1e-12)


def test_a_composite_is_composed_from_its_parts_predictions_as_a_refit_would_give(results, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(results, run)                        # its sne and statnn jobs, with their predictions
    composed = _paper_tables(run, "--store", str(run / "store"), "--methods", "statnn,sne,sne_statnn")
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "0 to run, 1 at a time, ['sne_statnn'] composed from their parts" in composed.stdout
    refit = _paper_tables(tmp_path / "refit", "--store", str(run / "store"), "--methods", "sne_statnn")
    assert refit.returncode == 0 and "1 at a time\n" in refit.stdout, refit.stderr[-3000:]
    key = ["train_zoo", "test_zoo", "seed"]
    a = read_results(run)[1].query("method == 'sne_statnn'").sort_values(key).reset_index(drop=True)
    b = read_results(tmp_path / "refit")[1].sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == 32 and a[key].equals(b[key])
    np.testing.assert_allclose(a["tau"].to_numpy(float), b["tau"].to_numpy(float), atol=1e-6)
    np.testing.assert_allclose(a["r2"].to_numpy(float), b["r2"].to_numpy(float), rtol=1e-6)   # r2 of -30 at smoke size
    pa_, pb = (read_predictions(d / "predictions.parquet").query("method == 'sne_statnn'") for d in (run, tmp_path / "refit"))
    both = pa_.merge(pb, on=key + ["model_id"])
    assert len(both) == len(pb) and np.abs(both["y_pred_x"] - both["y_pred_y"]).max() < 1e-6
    # a part whose job predates the saved predictions: refused with what to do, nothing composed
    jobs = next(run.glob("jobs-*"))
    composite, part = job_path(jobs, "sne_statnn", "mnist/arch1"), job_path(jobs, "sne", "mnist/arch1")
    composite.unlink()
    part.with_suffix(".preds.parquet").unlink()
    stale = _paper_tables(run, "--store", str(run / "store"), "--methods", "statnn,sne,sne_statnn")
    assert stale.returncode != 0 and "its part sne's job" in stale.stderr and "delete that file" in stale.stderr
    assert not composite.exists()


def test_a_changed_library_default_names_new_job_files(monkeypatch, tmp_path):
    # the jobs folder's key holds what the command sets; a method's own defaults are in its job files' names
    from dataclasses import replace
    from sne_core import methods
    before = {m: defaults_fingerprint(m) for m in ("sne", "statnn", "sne_statnn")}
    assert job_path(tmp_path, "sne", "mnist/arch1") == tmp_path / f"sne-{before['sne']}__mnist__arch1.csv"
    monkeypatch.setitem(methods.METHODS, "sne", replace(methods.METHODS["sne"], stats_weight=0.0))
    after = {m: defaults_fingerprint(m) for m in before}
    assert after["sne"] != before["sne"] and after["statnn"] == before["statnn"]
    assert after["sne_statnn"] != before["sne_statnn"]      # a composite is composed again when a part changes


def test_a_job_of_only_n_a_cells_saves_an_empty_predictions_file(tmp_path):
    # e.g. NFN trained on Arch2: no fit, no predictions, and the run's predictions.parquet still assembles
    empty = predictions_frame("nfn_np", "mnist/arch2", {})
    write_predictions(tmp_path / "na.parquet", empty)
    back = read_predictions(tmp_path / "na.parquet")
    assert len(back) == 0 and list(back.columns) == PREDICTION_COLUMNS
    some = predictions_frame("sne", "mnist/arch1", {0: {"mnist/arch1": ([3, 4], [0.5, 0.6], [0.4, 0.7])}})
    write_predictions(tmp_path / "all.parquet", pd.concat([back, some], ignore_index=True))
    assert read_predictions(tmp_path / "all.parquet").equals(some)


def test_a_damaged_predictions_file_is_refused_or_reads_the_same(tmp_path):
    """Flip any one byte (every 5th offset): the reader refuses the file, naming it, or (a byte the
    content does not depend on, e.g. column statistics) reads exactly what was written."""
    rng = np.random.default_rng(0)
    df = predictions_frame("sne", "mnist/arch1", {seed: {"mnist/arch1": (np.arange(100), rng.random(100), rng.random(100))}
                                                  for seed in range(2)})
    path = tmp_path / "predictions.parquet"
    write_predictions(path, df)
    written = read_predictions(path)
    assert written.equals(df)
    assert refused_byte_flips(path, lambda: read_predictions(path), written.equals, step=5) > 0.8


def test_hyper_reaches_the_predictor(results, tmp_path):
    # an invalid SNE setting must fail in SNE's own check, which proves --hyper got through to it
    bad = _paper_tables(tmp_path / "bad", "--store", str(results / "store"), "--methods", "sne",
                        "--hyper", '{"sne": {"log_floor": -1}}')
    assert bad.returncode != 0 and "log_floor must be >= 0" in bad.stderr


def test_method_train_reaches_its_method_only(results, tmp_path):
    store = str(results / "store")
    # an invalid value fails in TrainConfig's own check, which proves --method-train got through to SNE's config
    bad = _paper_tables(tmp_path / "bad", "--store", store, "--methods", "sne",
                        "--method-train", '{"sne": {"rank_weight": -1}}')
    assert bad.returncode != 0 and "rank_weight must be a finite number >= 0" in bad.stderr
    # ...and only to SNE's: StatNN trains with its own settings, and run.json records the setting
    ok = _paper_tables(tmp_path / "ok", "--store", store, "--methods", "statnn",
                       "--method-train", '{"sne": {"rank_weight": -1}}')
    assert ok.returncode == 0, ok.stderr[-3000:]
    _, raw, meta = read_results(tmp_path / "ok")
    assert meta["method_train"] == {"sne": {"rank_weight": -1}}
    _, reference, _ = read_results(results)
    key = ["train_zoo", "test_zoo", "seed"]
    ref = reference[reference.method == "statnn"].sort_values(key)
    np.testing.assert_allclose(raw.sort_values(key)["tau"].to_numpy(float), ref["tau"].to_numpy(float), atol=1e-6)
    # a per-method value wins over the flag that sets every method (--members): SNE's own 0 is refused by TrainConfig,
    # not passed twice
    over = _paper_tables(tmp_path / "over", "--store", store, "--methods", "sne", "--members", "2",
                         "--method-train", '{"sne": {"members": 0}}')
    assert over.returncode != 0 and "TrainConfig.members must be an integer >= 1, got 0" in over.stderr, over.stderr[-2000:]
    # a field another flag owns, or an unknown method, is refused before any work, naming it
    for arg, says in (('{"sne": {"seed": 3}}', "['seed'] cannot be set here"), ('{"snee": {"lr": 0.1}}', "unknown method 'snee'"),
                      ('{"sne": 0.3}', "takes a JSON object")):
        refused = _paper_tables(tmp_path / "refused", "--store", store, "--method-train", arg)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "refused" / "raw.csv").exists()


def _tracker(tmp_path, **kw) -> MLflowTracker:
    return MLflowTracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"), **kw)


def test_results_folder_has_the_documented_files(results):
    for t in TABLES:
        df = pd.read_csv(results / f"{t}.csv")
        assert list(df.columns) == CSV_COLUMNS and len(df)
    tables, raw, meta = read_results(results)
    assert meta["size"] == "smoke" and sorted(meta["zoos"]) == ["digits/arch1", "digits/arch2", "mnist/arch1", "mnist/arch2"]
    assert sorted(raw["seed"].unique()) == [0, 1]
    # the machine in words: on the CPU its model and cores, not only "x86_64"
    assert meta["device"].endswith(f", {os.cpu_count()} cores") and len(meta["device"]) > len(", 2 cores")
    # SNE reads both architectures, so it has cross-architecture cells; the average rows are there
    xa = tables["cross_architecture"]
    assert {"arch1->arch2", "arch2->arch1"} <= set(xa.loc[xa["method"] == "sne", "test_zoo"])


def test_import_writes_store_and_mlflow_once(results, tmp_path):
    store, tracker = ZooStore(tmp_path / "store"), _tracker(tmp_path)
    runs = import_results(results, "smoke-run", store, tracker)
    assert set(runs) == set(TABLES)
    for t in TABLES:
        got = store.read_frame(f"imports/smoke-run/{t}.parquet")
        csv = pd.read_csv(results / f"{t}.csv")
        assert len(got) == len(csv)
        np.testing.assert_allclose(got["tau_mean"].to_numpy(float), csv["tau_mean"].to_numpy(float), atol=1e-9)
    client, exp = tracker.client(), tracker.experiment_id(TASK)
    parents = client.search_runs([exp], "tags.`sne.import` = 'smoke-run'")
    assert sorted(r.data.tags["table"] for r in parents) == sorted(TABLES)
    assert all(r.data.params["run.size"] == "smoke" for r in parents)
    n_all = len(client.search_runs([exp], max_results=1000))
    # the same folder again: the same parent runs, nothing new logged
    assert import_results(results, "smoke-run", store, tracker) == runs
    assert len(client.search_runs([exp], max_results=1000)) == n_all


def test_cli_prints_what_it_imported(results, tmp_path, capsys):
    rc = sne_main(["import-results", str(results), "--store", str(tmp_path / "store"),
                   "--tracking-uri", f"sqlite:///{tmp_path}/cli.db"])
    out = capsys.readouterr().out
    assert rc == 0 and "imported 'smoke-run'" in out and "imports/smoke-run/cross_dataset.parquet" in out


@pytest.mark.parametrize("tamper, message", [
    (lambda d: _edit(d / "cross_dataset.csv", "tau_mean", 0, 0.123456), "cross_dataset.csv: field 'tau_mean'"),
    (lambda d: _edit(d / "in_distribution.csv", "r2_mean", 0, "high"), "in_distribution.csv: field 'r2_mean' row 2"),
    (lambda d: _edit(d / "raw.csv", "seed", 0, -1), "raw.csv: field 'seed' row 2"),
    (lambda d: (d / "raw.csv").unlink(), "raw.csv: file missing"),
    (lambda d: pd.read_csv(d / "cross_architecture.csv").drop(columns="seeds").to_csv(
        d / "cross_architecture.csv", index=False), "cross_architecture.csv: field(s) ['seeds'] missing"),
    (lambda d: (d / "run.json").write_text("{not json"), "run.json: not JSON"),
])
def test_a_tampered_folder_is_refused_before_any_write(results, tmp_path, tamper, message):
    bad = tmp_path / "bad"
    shutil.copytree(results, bad)
    tamper(bad)
    store = ZooStore(tmp_path / "store")
    with pytest.raises(ResultsError, match=re.escape(message)):
        import_results(bad, "bad", store, _tracker(tmp_path))
    assert not (tmp_path / "store" / "imports").exists()


def _edit(path: Path, column: str, row: int, value) -> None:
    df = pd.read_csv(path)
    df[column] = df[column].astype(object)
    df.loc[row, column] = value
    df.to_csv(path, index=False)
