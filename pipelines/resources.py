"""Dagster resources: where the store lives, where MLflow logs, which device trains.

Each is a `ConfigurableResource`, so every field can be set in the Dagster launchpad or in run
config (`resources: {store: {config: {root: s3://bucket/sne}}}`) and pydantic refuses a bad value
with the field's name when the resource is built, before an asset body runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The project's data directory (gitignored); SNE_DATA_DIR moves it, e.g. onto a bigger disk."""
    return Path(os.environ.get("SNE_DATA_DIR", PROJECT_ROOT / "data")).resolve()


class StoreResource(ConfigurableResource):
    """The Parquet weight store. `root` is a local folder or any pyarrow filesystem URI
    (s3://, gs://, hdfs://, file://); empty means `<data dir>/store`."""

    root: str = Field(default="", description="store root: local path or pyarrow filesystem URI")
    datasets_root: str = Field(default="", description="folder of the image datasets; empty = SNE_DATASETS_ROOT "
                               "or <project>/data/datasets (where `make data` puts them)")
    # Local even when `root` is remote: what an interrupted asset finished (a predictor partition's trained fits,
    # seed by seed and ensemble member by member) is saved here and loaded by the retry, then deleted.
    work_dir: str = Field(default="", description="local folder for unfinished work, so that a rerun resumes it; "
                          "empty = <data dir>/work")

    @field_validator("root")
    @classmethod
    def _root_is_path_or_uri(cls, v: str) -> str:
        if v and ("://" not in v) and any(c in v for c in "\n\0"):
            raise ValueError(f"field 'root' must be a folder path or a URI like s3://bucket/prefix, got {v!r}")
        return v

    def uri(self) -> str:
        return self.root or str(data_dir() / "store")

    def datasets_uri(self) -> str:
        return self.datasets_root or os.environ.get("SNE_DATASETS_ROOT", str(PROJECT_ROOT / "data" / "datasets"))

    def work_path(self) -> Path:
        return Path(self.work_dir).resolve() if self.work_dir else data_dir() / "work"

    def get(self):
        from sne_core.store import ZooStore
        return ZooStore(self.uri())


class DeviceResource(ConfigurableResource):
    """Where predictors and zoo networks train: auto (cuda if present), cpu or cuda."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(default=0, ge=0, description="torch intra-op threads per process; 0 = torch's default")

    def resolve(self) -> str:
        import torch
        from sne_core.devices import resolve_device
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        try:
            return resolve_device(self.device).type
        except ValueError as e:
            raise ValueError(f"field 'device': {e}") from None


_CLIENTS: dict[str, Any] = {}


def _sanitize(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]  # MLflow's param value limit


class MLflowTracker(ConfigurableResource):
    """A thin MLflow client: one experiment per task, runs found again by a content key so that
    materialising twice does not log twice (unless `new_runs` asks for it).

    Defaults: a sqlite tracking store and an artifact folder under the project's data directory;
    `tracking_uri` may be any MLflow tracking URI (http://host:5000, databricks, postgresql://...).
    """

    tracking_uri: str = Field(default="", description="MLflow tracking URI; empty = sqlite under data/mlflow")
    artifact_root: str = Field(default="", description="artifact folder or URI; empty = data/mlflow/artifacts")
    experiment_prefix: str = Field(default="sne", description="experiment name = '<prefix>/<task>'")
    new_runs: bool = Field(default=False, description="log a fresh run even when an identical one exists")

    @field_validator("tracking_uri")
    @classmethod
    def _uri_scheme(cls, v: str) -> str:
        if v and "://" not in v and v not in ("databricks",) and not v.startswith("file:"):
            raise ValueError(f"field 'tracking_uri' must be a URI such as sqlite:///abs/path/mlflow.db or "
                             f"http://host:5000, got {v!r}")
        return v

    @field_validator("experiment_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("field 'experiment_prefix' must be a non-empty string")
        return v

    # ---- locations -------------------------------------------------------------------------
    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        path = data_dir() / "mlflow" / "mlflow.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def artifacts(self) -> str:
        if self.artifact_root:
            return self.artifact_root
        path = data_dir() / "mlflow" / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()

    def client(self):
        """One client per tracking URI and process: building one opens (and for sqlite, checks the
        schema of) the store, which costs seconds; the client itself is stateless and thread-safe."""
        from mlflow.tracking import MlflowClient
        uri = self.uri()
        if uri not in _CLIENTS:
            _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
        return _CLIENTS[uri]

    def experiment_name(self, task: str) -> str:
        return f"{self.experiment_prefix}/{task}"

    def experiment_id(self, task: str) -> str:
        """Get or create the task's experiment (artifacts under artifact_root/<prefix>-<task>)."""
        client = self.client()
        name = self.experiment_name(task)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = f"{self.artifacts().rstrip('/')}/{name.replace('/', '-')}"
        try:
            # "custom_model_development" makes the MLflow 3 UI open the experiment on its runs table
            # (untagged experiments open on the GenAI traces overview)
            return client.create_experiment(name, artifact_location=location,
                                            tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # another process created it between our lookup and create
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ---- runs -------------------------------------------------------------------------------
    @staticmethod
    def run_key(**fields) -> str:
        """A content key: the same fields give the same key, so a rerun finds the earlier run."""
        return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def find_run(self, experiment_id: str, key: str):
        """The newest finished run tagged with `key`, or None."""
        runs = self.client().search_runs(
            [experiment_id], filter_string=f"tags.`sne.key` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def start_run(self, experiment_id: str, name: str, key: str, tags: dict | None = None,
                  parent_run_id: str | None = None):
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
        all_tags = {"sne.key": key, MLFLOW_RUN_NAME: name, **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        return self.client().create_run(experiment_id, tags={k: str(v) for k, v in all_tags.items()}, run_name=name)

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param
        items = [Param(str(k)[:250], _sanitize(v)) for k, v in sorted(params.items())]
        client = self.client()
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        # NaN is kept: an undefined tau (constant predictions, or fewer than two networks) is a
        # result, and MLflow stores and plots NaN as such
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items()) if v is not None]
        client = self.client()
        for i in range(0, len(items), 500):
            client.log_batch(run_id, metrics=items[i:i + 500])

    def log_artifact_bytes(self, run_id: str, filename: str, data: bytes, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            self.client().log_artifact(run_id, str(path), artifact_path)

    def log_artifact_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client().log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client().set_terminated(run_id, status)
