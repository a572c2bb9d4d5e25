"""W&B (offline) and MLflow (local file store) beside the JSONL log: the same scalars reach
both, and a resumed run continues the same tracker runs after rewinding the redone steps."""

import importlib.util
import json

import pytest

from mogrpo.config import ConfigError, RunConfig, load_config
from mogrpo.metrics import MetricsLogger
from mogrpo.tracking import check_trackers, flatten, open_trackers
from tests.helpers import wandb_history

ON = ["logging.wandb.enabled=true", "logging.mlflow.enabled=true", "logging.tensorboard=false"]


def test_trackers_log_and_resume(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = load_config(None, ON + ["learner.lr=3e-6"])
    config = cfg.model_dump(mode="json")
    logger = MetricsLogger(tmp_path, tensorboard=False, sinks=open_trackers(cfg.logging, tmp_path, "t", config, False))
    logger.rewind(None)
    for step in (1, 2, 3):
        logger.log(step, {"reward/mean": step / 10, "reward/mean/harmful": 1.0,  # a/b and a/b/c: both kept
                          "note": "text is not a scalar", "kl": float("nan")})
    logger.close("KILLED")
    ids = json.loads((tmp_path / "trackers.json").read_text())

    # resumed from the checkpoint of step 1: steps 2 and 3 are redone with other values
    logger = MetricsLogger(tmp_path, tensorboard=False, sinks=open_trackers(cfg.logging, tmp_path, "t", config, True))
    assert json.loads((tmp_path / "trackers.json").read_text()) == ids
    logger.rewind(1)
    for step in (2, 3):
        logger.log(step, {"reward/mean": step / 100})
    logger.close()

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reward/mean"]) for r in lines] == [(1, 0.1), (2, 0.02), (3, 0.03)]

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.data.params["learner.lr"] == "3e-06"
    history = [(m.step, m.value) for m in client.get_metric_history(ids["mlflow"], "reward.mean")]
    assert sorted(history) == [(1, 0.1), (2, 0.02), (2, 0.2), (3, 0.03), (3, 0.3)]
    assert not client.get_metric_history(ids["mlflow"], "kl") and "note" not in run.data.metrics

    rows = [r for r in wandb_history(tmp_path) if "reward/mean" in r]
    assert [(r["step"], r["reward/mean"]) for r in rows] == [(1, 0.1), (2, 0.2), (3, 0.3), (2, 0.02), (3, 0.03)]
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))  # the resumed one: "<id>-1"
    assert len(runs) == 2 and all(f"-{ids['wandb']}" in name for name in runs)


def test_missing_tracker_package_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logging.wandb.enabled.*pip install wandb"):
        check_trackers(RunConfig.model_validate({"logging": {"wandb": {"enabled": True}}}).logging)
    check_trackers(RunConfig().logging)  # off by default: nothing to check


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
