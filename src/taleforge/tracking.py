"""Experiment tracking in MLflow; a no-op tracker when tracking is off.

The default store is a SQLite file in the project's run directory (``runs/mlflow.db``) with
artifacts under ``runs/mlartifacts``; ``make mlflow-ui`` opens the MLflow UI on it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("runs")


def default_tracking_uri(runs_dir: Path = DEFAULT_RUNS_DIR) -> str:
    return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"


def perplexity(loss: float) -> float:
    """exp(loss), with an overflow guard (run_clm's convention)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; sequences become JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value)[:500]
        else:
            flat[name] = value
    return flat


class NullTracker:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None

    def start(self, run_name: str, resume_run_id: str | None = None) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (once per run)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metrics at a step."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log a text artifact."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a file or directory."""

    def log_model(self, model_dir: Path, registered_name: str | None) -> None:
        """Log (and register) the trained model."""

    def end(self, status: str = "FINISHED") -> None:
        """Close the run."""


class MlflowTracker(NullTracker):
    """Logs to MLflow: params, metrics by step, text and file artifacts, the final model."""

    def __init__(
        self, tracking_uri: str | None, experiment: str, runs_dir: Path = DEFAULT_RUNS_DIR
    ) -> None:
        import mlflow

        self._mlflow = mlflow
        self.tracking_uri = tracking_uri or default_tracking_uri(runs_dir)
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        mlflow.set_tracking_uri(self.tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            location = None
            if self.tracking_uri.startswith("sqlite:///"):
                db = Path(self.tracking_uri.removeprefix("sqlite:///"))
                location = (db.parent / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)

    def start(self, run_name: str, resume_run_id: str | None = None) -> str | None:
        run = self._mlflow.start_run(
            run_id=resume_run_id, run_name=None if resume_run_id else run_name
        )
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MLflow refuses to change a logged param; on resume the same values are skipped.
        client = self._mlflow.tracking.MlflowClient()
        assert self.run_id is not None
        logged = client.get_run(self.run_id).data.params
        fresh = {k: v for k, v in params.items() if k not in logged}
        if fresh:
            self._mlflow.log_params(fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        finite = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)
        }
        if finite:
            self._mlflow.log_metrics(finite, step=step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path)
        elif path.exists():
            self._mlflow.log_artifact(str(path), artifact_path)

    def log_model(self, model_dir: Path, registered_name: str | None) -> None:
        """Log the model directory as an MLflow pyfunc model that writes stories."""
        import mlflow.pyfunc

        import taleforge

        code = Path(taleforge.__file__).parent / "mlflow_model.py"
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"model_dir": str(model_dir)},
            pip_requirements=["taleforge"],
            registered_model_name=registered_name,
        )

    def end(self, status: str = "FINISHED") -> None:
        if self._mlflow.active_run() is not None:
            self._mlflow.end_run(status=status)


def make_tracker(enabled: bool, tracking_uri: str | None, experiment: str) -> NullTracker:
    return MlflowTracker(tracking_uri, experiment) if enabled else NullTracker()
