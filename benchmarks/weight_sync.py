"""Weight sync, measured in one run with SmolLM2 and real Ray actors on both ends:

- `weight_sync/bucketed_s`: our sync (packed buckets, one collective each, vLLM in-place load);
- `weight_sync/per_param_s`: one parameter at a time with a blocking call per parameter,
  as OpenRLHF broadcasts (same transport, same in-place load);
- `weight_sync/raw_broadcast_s`: one raw broadcast of a flat buffer of the same size;
- `learner/tokens_per_s`: one GRPO train step on groups the worker sampled.

Ratios (`weight_sync/per_param_over_bucketed`, `weight_sync/bucketed_over_raw`) compare
numbers taken minutes apart on the same machine; absolute seconds vary with load.

    .venv/bin/python -m benchmarks.weight_sync      (also part of `make bench`)
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import ray

from benchmarks.results import merge_results, print_table
from learner.actor import LearnerWorker
from mogrpo.batch import Prompt, RewardScores, SamplingSettings
from mogrpo.config.learner import LearnerConfig
from mogrpo.models import resolve_model
from mogrpo.runtime import free_port, worker_env
from mogrpo.config.sections import WeightSyncConfig
from orchestration.groups import LearnerGroup, RolloutGroup, gather
from orchestration.steps import connect_weight_sync, sync_weights
from rollout.worker import RolloutWorker


class PerParamLearner(LearnerWorker):
    """The learner end of the one-parameter-at-a-time baseline."""

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.engine.module.named_parameters()]

    def send_one(self, version: int, index: int) -> None:
        name, param = list(self.engine.module.named_parameters())[index]
        self.sender.send(version, [(name, param)], dtype=self.wire_dtype)


class PerParamRollout(RolloutWorker):
    """The vLLM end of the baseline: one RPC and one broadcast per parameter."""

    def begin(self) -> None:
        self.llm.start_weight_update()

    def receive_one(self, version: int) -> None:
        self.llm.update_weights({"update_info": {"version": version}})

    def end(self, version: int) -> int:
        self.llm.finish_weight_update(weight_version=str(version))
        self.llm.reset_prefix_cache()
        self.version = version
        return version


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(repeats: int = 5, bucket_mb: float = 16) -> dict:
    path = str(resolve_model("smollm2-135m-instruct"))
    # One intra-op thread per actor: both ends share a small CPU, and spinning OpenMP
    # threads of one would starve the other and the transport.
    env = {"num_cpus": 1, "runtime_env": {"env_vars": worker_env(1)}}
    cfg = LearnerConfig(dtype="bfloat16", zero_stage=0, lr=1e-6)
    learner = ray.remote(PerParamLearner).options(**env).remote(
        path, cfg, group_size=4, max_new_tokens=64, master_port=free_port())
    worker = ray.remote(PerParamRollout).options(**env).remote(path, dtype="bfloat16", max_model_len=512)
    gather({"learner": learner.ready.remote(), "rollout": worker.ready.remote()}, "start")
    learners, rollouts = LearnerGroup([learner]), RolloutGroup([worker], ["rollout-0"], 1)
    connect_weight_sync(learners, rollouts, WeightSyncConfig(bucket_mb=bucket_mb, timeout_s=300), "bfloat16")
    version = iter(range(1, 10**6))

    def bucketed():
        return sync_weights(learners, rollouts, next(version))

    stats = bucketed()  # warm-up: the layout is planned and published once
    nbytes = stats["weight_sync/bytes"]
    bucketed_s = timed(bucketed, repeats)

    def raw():
        gather({"learner": learner.probe_transport.remote(nbytes), "rollout": worker.probe_transport.remote(nbytes)}, "raw")

    raw()
    raw_s = timed(raw, repeats)

    n_params = len(ray.get(learner.parameter_names.remote()))

    def per_param():
        ray.get(worker.begin.remote())
        for index in range(n_params):  # a blocking round trip per parameter
            v = next(version)
            ray.get([learner.send_one.remote(v, index), worker.receive_one.remote(v)])
        ray.get(worker.end.remote(v))

    per_param_s = timed(per_param, 3)

    # One GRPO train step on real sampled groups (8 prompts x 4 responses x <= 64 tokens).
    from transformers import AutoTokenizer

    from mogrpo.prompts import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(path)
    questions = ["Explain photosynthesis briefly.", "Write a haiku about rain.", "How do I boil an egg?",
                 "What is a prime number?", "Give me a tip for learning to code.", "Why is the sea salty?",
                 "Describe a cat to someone who has never seen one.", "What is inflation?"]
    prompts = [Prompt(i, q, tuple(encode_prompt(tokenizer, [{"role": "user", "content": q}])))
               for i, q in enumerate(questions)]
    batch = ray.get(worker.generate.remote(prompts, SamplingSettings(group_size=4, max_new_tokens=64, seed=0)))
    rewards = np.random.default_rng(0).random(len(batch)).astype(np.float32)
    train = ray.get(learner.train_step.remote(batch.with_rewards(RewardScores({"r": rewards}, rewards))))
    for handle in (learner, worker):
        ray.kill(handle, no_restart=True)
    return {
        "weight_sync/bytes": int(nbytes),
        "weight_sync/parameters": n_params,
        "weight_sync/bucket_mb": bucket_mb,
        "weight_sync/bucketed_s": bucketed_s,
        "weight_sync/per_param_s": per_param_s,
        "weight_sync/raw_broadcast_s": raw_s,
        "weight_sync/per_param_over_bucketed": per_param_s / bucketed_s,
        "weight_sync/bucketed_over_raw": bucketed_s / raw_s,
        "weight_sync/bucketed_gb_per_s": nbytes / bucketed_s / 1e9,
        "learner/tokens_per_s": train["learner/tokens_per_s"],
    }


def main(argv: list[str] | None = None) -> dict:
    from mogrpo.runtime import init_ray

    init_ray(None, num_cpus=4, runtime_env={"env_vars": worker_env(1)})
    results = run()
    print_table("weight sync (SmolLM2-135M, bf16, gloo, Ray actors on both ends)", results)
    merge_results(results)
    return results


if __name__ == "__main__":
    main()
