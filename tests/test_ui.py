"""The two UIs a user opens, driven by headless Chromium (Debian's, through Playwright's Python
package): `dagster dev` lists the pipeline's assets, `mlflow ui` shows the experiment.

Servers start on 127.0.0.1 on a free port, are polled over HTTP until ready, and stop with
SIGINT (killed if they hang). Screenshots are kept in test-artifacts/.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before {url} answered:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server(cmd: list[str], ready_url: str, env: dict, log: Path):
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(ready_url, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # both servers shut their children down on SIGINT
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextmanager
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            yield page
        finally:
            browser.close()


def dismiss_welcome(page) -> None:
    """Close Dagster's first-visit "Join the community" dialog (it covers the graph); it opens a
    moment after the page, so wait for it briefly. Also lets the graph layout settle."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.first.wait_for(timeout=5_000)
        skip.first.click()
    except Exception:   # no dialog this time: nothing to close
        pass
    page.wait_for_timeout(1_000)


def test_dagster_ui_lists_the_assets(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "SNE_PROFILE": "smoke", "SNE_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(ROOT)}
    cmd = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    base = f"http://127.0.0.1:{port}"
    with server(cmd, f"{base}/server_info", env, tmp_path / "dagster.log"):
        with browser_page() as page:
            page.goto(f"{base}/assets", wait_until="domcontentloaded")
            for name in ("dataset", "zoo", "splits", "predictors", "in_distribution_table",
                         "cross_dataset_table", "cross_architecture_table"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
            page.screenshot(path=str(ARTIFACTS / "dagster_assets.png"), full_page=True)
            # the global lineage graph shows the three groups in data-flow order ...
            page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
            for group in ("zoos", "predictors", "results"):
                page.get_by_text(group, exact=True).first.wait_for(timeout=90_000)
            dismiss_welcome(page)
            page.screenshot(path=str(ARTIFACTS / "dagster_lineage.png"), full_page=True)
            # ... and each group's graph its assets as nodes
            location = "pipelines.definitions:defs"
            for group, names in (("zoos", ("dataset", "zoo", "splits")),
                                 ("results", ("in_distribution_table", "cross_dataset_table", "cross_architecture_table"))):
                page.goto(f"{base}/locations/{location}/asset-groups/{group}", wait_until="domcontentloaded")
                for name in names:
                    page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
                dismiss_welcome(page)
                page.screenshot(path=str(ARTIFACTS / f"dagster_asset_graph_{group}.png"), full_page=True)
    assert (ARTIFACTS / "dagster_asset_graph_zoos.png").stat().st_size > 10_000


def test_mlflow_ui_shows_the_experiment(tmp_path):
    from pipelines.mlflow_tracking import TASK
    from pipelines.resources import MLflowTracker
    ARTIFACTS.mkdir(exist_ok=True)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MLflowTracker(tracking_uri=uri, artifact_root=(tmp_path / "artifacts").as_uri())
    exp = tracker.experiment_id(TASK)
    run = tracker.start_run(exp, "sne @ digits/arch1 seed 0", key="ui-test", tags={"method": "sne"})
    tracker.log_params(run.info.run_id, {"method": "sne", "train_zoo": "digits/arch1", "seed": 0})
    for epoch, tau in enumerate((0.2, 0.4, 0.5)):
        tracker.log_metrics(run.info.run_id, {"val_tau": tau}, step=epoch)
    tracker.finish(run.info.run_id)

    port = free_port()
    cmd = [str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with server(cmd, f"{base}/health", {**os.environ}, tmp_path / "mlflow.log"):
        with browser_page() as page:
            page.goto(f"{base}/#/experiments/{exp}/runs", wait_until="domcontentloaded")
            page.get_by_text(tracker.experiment_name(TASK)).first.wait_for(timeout=90_000)
            page.get_by_text("sne @ digits/arch1 seed 0").first.wait_for(timeout=90_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow_experiment.png"), full_page=True)
    assert (ARTIFACTS / "mlflow_experiment.png").stat().st_size > 10_000
