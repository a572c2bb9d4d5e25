"""The whole GRPO job on real components (tiny policy), then a resumed run."""

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from mogrpo.config import load_config
from orchestration.train import run
from tests.helpers import tiny_run_overrides, wandb_history

pytestmark = pytest.mark.slow
REQUIRED = ["step", "policy_version", "reward/mean", "kl", "loss", "clip_frac", "response_len/mean",
            "time/generate", "time/reward", "time/train", "time/sync", "time/step"]
TRACKERS = ["logging.wandb.enabled=true", "logging.mlflow.enabled=true"]  # W&B offline, MLflow in <run>/mlruns


def test_grpo_job_then_resume(ray_local, tmp_path, quick_reward_model):
    from transformers import AutoModelForCausalLM

    from mogrpo.models import resolve_model

    cfg = load_config("cluster_configs/cpu_smoke.yaml", tiny_run_overrides(tmp_path, quick_reward_model, steps=2) + [
        "eval.every=2", "eval.max_new_tokens=8", *TRACKERS])
    final = run(cfg)
    run_dir = Path(tmp_path) / "e2e"

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # in-training evaluation on held-out prompts: the starting policy (step 0) and the last step
    held_out = {r["step"]: r for r in records if "eval/harmful_refusal" in r}
    assert sorted(held_out) == [0, 2] and all(0 <= r["eval/benign_refusal"] <= 1 for r in held_out.values())
    records = [r for r in records if r["step"] >= 1]
    assert [r["step"] for r in records] == [1, 2]
    for key in REQUIRED + [f"reward/{label}" for label in ("safety", "actionability", "meaningfulness", "politeness")]:
        assert key in records[-1], key
    # the smoke config tags its harmful and benign prompt sources: their rollouts' refusal rates are logged
    logged = {k for r in records for k in r if k.startswith("rollout/refusal_rate/")}
    assert logged and logged <= {"rollout/refusal_rate/harmful", "rollout/refusal_rate/benign"}
    assert all(0.0 <= r["rollout/refusal_rate"] <= 1.0 for r in records)
    assert [r["policy_version"] for r in records] == [1, 2]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file()
    rollouts = pq.read_table(run_dir / "rollouts" / "step-000002.parquet")
    assert rollouts.num_rows == 6 and "reward/safety" in rollouts.column_names

    trained = AutoModelForCausalLM.from_pretrained(final)
    initial = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"))
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), initial.state_dict().values()))

    # A rerun of the finished run starts nothing and leaves final/ as it is (the evaluation's
    # answer caches are keyed by its files' sizes and times).
    from mogrpo.generation import model_fingerprint

    weights, metrics = model_fingerprint(final), (run_dir / "metrics.jsonl").read_text()
    time.sleep(1.1)  # fingerprints hold whole seconds
    assert run(cfg) == final
    assert model_fingerprint(final) == weights and (run_dir / "metrics.jsonl").read_text() == metrics
    assert json.loads((run_dir / "final.json").read_text()) == {"step": 2, "policy_version": 2}

    # Resume: the last step is the newest checkpoint; a longer run picks up from there and adds step 3.
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 2 and latest["policy_version"] == 2
    assert latest["prompt_position"] == 4  # two prompts a step
    # The resumed run also switches on asynchronous rollouts, DAPO with dynamic sampling, and
    # a written refusal in every group.
    cfg = load_config("cluster_configs/cpu_smoke.yaml", tiny_run_overrides(tmp_path, quick_reward_model, steps=3) + [
        "rollout.max_staleness=1", "learner.loss.variant=dapo", "learner.loss.clip_eps_high=0.28",
        "learner.loss.dynamic_sampling=true", "learner.loss.dynamic_sampling_max_rounds=1",
        "rollout.written_refusals=1", *TRACKERS])
    run(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]  # step 0: the held-out evaluation before training
    assert records[-1]["policy_version"] == 3
    assert json.loads((run_dir / "final.json").read_text()) == {"step": 3, "policy_version": 3}
    assert "dynamic_sampling/informative_frac" in records[-1]
    assert -10 < records[-1]["written/margin"] < 10
    rows = pq.read_table(run_dir / "rollouts" / "step-000003.parquet").to_pylist()
    written = [r for r in rows if r["written"]]
    assert len(written) == len(rows) // 3 and all(r["response"] in cfg.rollout.written_refusal_texts for r in written)
    assert all(r["response_token_ids"][-1] == 2 for r in written)  # tiny-llama's end-of-sequence token

    # the trackers got every step, the resumed run's in the same tracker runs
    from mlflow.tracking import MlflowClient

    ids = json.loads((run_dir / "trackers.json").read_text())
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    assert sorted(m.step for m in client.get_metric_history(ids["mlflow"], "policy_version")) == [0, 1, 2, 3]
    assert client.get_run(ids["mlflow"]).info.status == "FINISHED"
    assert [r["step"] for r in wandb_history(run_dir) if "reward/mean" in r] == [1, 2, 3]


def test_missing_reward_model_fails_before_any_actor(tmp_path):
    cfg = load_config("cluster_configs/cpu_smoke.yaml", [
        f"output_dir={tmp_path}", "model.path=tiny-llama", f"reward.model={tmp_path / 'no-rm'}",
        "reward.fit_if_missing=false"])
    with pytest.raises(FileNotFoundError, match="no-rm"):
        run(cfg)
