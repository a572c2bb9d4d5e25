"""A rollout worker that dies is replaced: the new worker joins a re-formed weight-sync
group with the surviving ones, receives the learner's current policy, and the call that
failed runs again. Real Ray actors, DeepSpeed, vLLM and gloo; the fault is a kill of the
worker's process, once during a weight sync and once in the middle of a training run."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from mogrpo.batch import RewardScores, SamplingSettings
from mogrpo.config import load_config
from mogrpo.models import resolve_model
from mogrpo.runtime import free_port
from orchestration.actors import start_actor
from orchestration.groups import ActorFailedError, LearnerGroup, RolloutGroup, gather
from tests.helpers import GREEDY, TINY, hf_greedy, long_prompt, tiny_run_overrides

pytestmark = pytest.mark.slow


def test_worker_killed_during_sync_is_replaced_and_resynced(ray_local, tmp_path):
    from transformers import AutoTokenizer

    cfg = load_config(None, TINY + ["rollout.num_workers=2", "rollout.max_restarts=1", "weight_sync.timeout_s=15",
                                    "weight_sync.bucket_mb=1", "weight_sync.verify_checksum=true", "learner.lr=1e-2",
                                    "learner.loss.kl_coef=0", "cluster.actor_start_timeout_s=300"])
    path = str(resolve_model("tiny-llama"))
    names = ["rollout-0", "rollout-1"]

    def spawn(i):
        return start_actor("rollout", cfg, path, index=i)

    learner = start_actor("learner", cfg, path, master_port=free_port())
    learners = LearnerGroup([learner])
    rollouts = RolloutGroup([spawn(0), spawn(1)], names, 1, spawn, max_restarts=cfg.rollout.max_restarts)
    gather({"learner-0": learner.ready.remote(), **{n: h.ready.remote() for n, h in zip(names, rollouts.handles)}},
           "start")
    rollouts.connect(learners, cfg.weight_sync, "float32")

    # One real update, so that the learner's weights differ from what a new worker loads.
    prompt = long_prompt(AutoTokenizer.from_pretrained(path))
    sampled = ray.get(rollouts.handles[0].generate.remote([prompt], SamplingSettings(group_size=4, max_new_tokens=16, seed=1)))
    rewards = np.array([len(t) for t in sampled.column("response_token_ids")], dtype=np.float32) + np.arange(4)
    ray.get(learner.train_step.remote(sampled.with_rewards(RewardScores({"length": rewards}, rewards))))
    expected = hf_greedy(ray.get(learner.save_pretrained.remote(str(tmp_path / "policy"))), prompt, GREEDY.max_new_tokens)
    rollouts.sync(1)

    # rollout-1 dies; the next sync fails, the group replaces it and syncs everyone again.
    dead = rollouts.handles[1]
    ray.kill(dead, no_restart=True)
    assert rollouts.sync(2) == {}  # recovery's own full sync carried version 2
    assert rollouts.restarts == 1 and rollouts.handles[1] is not dead
    assert rollouts.versions() == {"rollout-0": 2, "rollout-1": 2}
    outputs = rollouts.generate([prompt, prompt], GREEDY)
    assert outputs.column("response_token_ids") == [expected, expected]  # the new worker holds the learner's weights
    assert outputs.column("policy_version") == [2, 2]
    # The re-formed group carries the next update (with checksums on both ends).
    rollouts.sync(3)
    assert rollouts.versions() == {"rollout-0": 3, "rollout-1": 3}

    # A worker that raised but is alive is not restarted: the error comes through.
    with pytest.raises(ActorFailedError, match="StaleWeightsError"):
        rollouts.generate([prompt], GREEDY, 0, version=99)
    # Restarts used up: the death ends the run, naming the worker.
    ray.kill(rollouts.handles[0], no_restart=True)
    with pytest.raises(ActorFailedError, match=r"rollout-0 died and rollout.max_restarts=1 restarts are used up"):
        rollouts.generate([prompt], GREEDY, 0, version=3)
    for handle in [learner, *rollouts.handles]:
        ray.kill(handle, no_restart=True)


def rollout_worker_pids() -> list[int]:
    """Processes of this test session's Ray instance that run a RolloutWorker."""
    marker = f"MOGRPO_RAY_TMP={os.environ['MOGRPO_RAY_TMP']}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::RolloutWorker") \
                    and marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def test_training_run_survives_a_killed_worker(ray_local, tmp_path, quick_reward_model):
    from orchestration.train import run

    metrics = tmp_path / "e2e" / "metrics.jsonl"
    killed: list[int] = []

    def kill_after_first_step():  # while step 2's groups are being generated
        deadline = time.time() + 600
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
            time.sleep(0.2)
        for pid in rollout_worker_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_after_first_step, daemon=True)
    killer.start()
    cfg = load_config("cluster_configs/cpu_smoke.yaml", tiny_run_overrides(tmp_path, quick_reward_model, steps=3) + [
        "checkpoint.every=0", "weight_sync.timeout_s=20"])
    run(cfg)
    killer.join(timeout=5)

    assert len(killed) == 1
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["policy_version"] for r in records] == [1, 2, 3]
    assert [r["rollout/restarts"] for r in records] == [0, 1, 1]
    deadline = time.time() + 60  # the replacement is shut down with the run (ray.kill is asynchronous)
    while rollout_worker_pids() and time.time() < deadline:
        time.sleep(0.5)
    assert rollout_worker_pids() == []
