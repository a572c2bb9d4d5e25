"""Optional experiment trackers beside TensorBoard and the JSONL log: Weights & Biases and
MLflow, chosen in `logging.wandb` / `logging.mlflow`. Each is a sink with `log(step, scalars)`
and `close(status)`; a resumed run appends to the tracker runs it started (their ids are
kept in `<run>/trackers.json`)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from mogrpo.atomic import atomic_write_text
from mogrpo.config import ConfigError
from mogrpo.config.sections import LoggingConfig, MlflowConfig, WandbConfig

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow-skinny"}


def check_trackers(cfg: LoggingConfig) -> None:
    """Fail before any actor starts if an enabled tracker's package is missing."""
    for name, pip_name in PACKAGES.items():
        if getattr(cfg, name).enabled and importlib.util.find_spec(name) is None:
            raise ConfigError(f"logging.{name}.enabled is true but the {name} package is not installed "
                              f"(pip install {pip_name}, or set logging.{name}.enabled=false)")


def open_trackers(cfg: LoggingConfig, run_dir: Path, run_name: str, config: dict, resume: bool) -> list:
    """The enabled trackers' sinks. With `resume`, each continues the run recorded in
    `<run>/trackers.json`; otherwise each starts a new one and the file is rewritten."""
    ids_path = Path(run_dir) / "trackers.json"
    ids = json.loads(ids_path.read_text()) if resume and ids_path.exists() else {}
    sinks = []
    if cfg.wandb.enabled:
        sinks.append(WandbSink(cfg.wandb, run_dir, run_name, config, ids.get("wandb")))
    if cfg.mlflow.enabled:
        sinks.append(MlflowSink(cfg.mlflow, run_dir, run_name, config, ids.get("mlflow")))
    if sinks:
        atomic_write_text(ids_path, json.dumps({s.name: s.run_id for s in sinks}, indent=2))
    return sinks


class WandbSink:
    """A W&B run whose x axis is the training step (`step`), so steps redone after a resume
    are logged again at the same x."""

    name = "wandb"

    def __init__(self, cfg: WandbConfig, run_dir: Path, run_name: str, config: dict, run_id: str | None):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir), name=run_name,
                              id=run_id, resume="allow", config=config, tags=cfg.tags or None)
        self.run.define_metric("*", step_metric="step")
        self.run_id = self.run.id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({"step": step, **scalars})

    def close(self, status: str = "FINISHED") -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


class MlflowSink:
    """An MLflow run: the flattened config as parameters (once, when the run is created),
    then every step's scalars, named with "." for "/" (`reward/safety` -> `reward.safety`):
    MLflow's file store keeps a metric per file, so `a/b` and `a/b/c` could not both exist. A
    local folder becomes MLflow's file store."""

    name = "mlflow"

    def __init__(self, cfg: MlflowConfig, run_dir: Path, run_name: str, config: dict, run_id: str | None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or str(Path(run_dir) / "mlruns")
        if "://" not in uri or uri.startswith("file:"):
            uri = uri if uri.startswith("file:") else Path(uri).resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for an opt-in
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(cfg.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.experiment)
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):  # MLflow's batch limit
                self.client.log_batch(run_id, params=params[i:i + 100])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id, self.uri = run_id, uri

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "."), float(v), now, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
