"""Weight sync, measured in one run with SmolLM2 and real Ray actors on both ends:

- `weight_sync/bucketed_s`: our sync end to end (buckets, one collective each, vLLM's in-place
  load included), from a ZeRO-2 learner as in cpu_smoke.yaml (buckets are views of
  DeepSpeed's flat buffer);
- `weight_sync/transfer_s`: the same protocol with the worker dropping the buckets instead of
  loading them: what our sync costs over the wire alone;
- `weight_sync/per_param_s`: one parameter at a time with a blocking call per parameter,
  as OpenRLHF broadcasts (same transport, same in-place load);
- `weight_sync/raw_broadcast_s`: one raw broadcast of a flat buffer of the same size, into a
  buffer allocated once (so it times the wire, not page faults);
- `learner/tokens_per_s`: one GRPO train step on groups the worker sampled.

Ratios (`weight_sync/per_param_over_bucketed`, `weight_sync/bucketed_over_raw`,
`weight_sync/transfer_over_raw`) compare medians of interleaved repeats in one run;
absolute seconds vary with load.

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
from mogrpo.config import load_config
from mogrpo.config.sections import WeightSyncConfig
from mogrpo.hardware import resolve_auto_dtypes
from mogrpo.models import resolve_model
from mogrpo.runtime import free_port, worker_env
from orchestration.actors import start_actor
from orchestration.groups import LearnerGroup, RolloutGroup, gather
from rollout.worker import RolloutWorker


class PerParamLearner(LearnerWorker):
    """The learner end of the one-parameter-at-a-time baseline."""

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.engine.module.named_parameters()]

    def send_one(self, version: int, index: int) -> None:
        name, param = list(self.engine.module.named_parameters())[index]
        self.sender.send(version, [(name, param)], dtype=self.wire_dtype)

    def probe_transport(self, nbytes: int) -> int:
        """One raw broadcast of `nbytes`: what the wire alone costs."""
        self.sender.group.probe(nbytes)
        return nbytes


def _probe_receive(worker, nbytes: int) -> int:  # runs inside vLLM's worker (collective_rpc)
    worker.weight_transfer_engine.group.probe(nbytes)
    return nbytes


def _receive_without_loading(worker, version: int) -> int:  # the protocol and the wire, without vLLM's load
    for _ in worker.weight_transfer_engine.receiver.receive(version):
        pass
    return version


class PerParamRollout(RolloutWorker):
    """The vLLM end of the baseline: one RPC and one broadcast per parameter."""

    def begin(self) -> None:
        self.llm.start_weight_update()

    def receive_one(self, version: int) -> None:
        self.llm.update_weights({"update_info": {"version": version}})

    def drain(self, version: int) -> int:
        return self.llm.collective_rpc(_receive_without_loading, args=(version,))[0]

    def probe_transport(self, nbytes: int) -> int:
        return self.llm.collective_rpc(_probe_receive, args=(nbytes,))[0]

    def end(self, version: int) -> int:
        self.llm.finish_weight_update(weight_version=str(version))
        self.llm.reset_prefix_cache()
        self.version = version
        return version


def timed(fns, repeats: int) -> list[float]:
    """Median seconds of each of `fns`, run interleaved so that all see the same
    background load; the median drops the spikes of a noisy machine."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def run(repeats: int = 11, bucket_mb: float = 16) -> dict:
    path = str(resolve_model("smollm2-135m-instruct"))
    # as cluster_configs/cpu_smoke.yaml: its threads, and bf16 only where the CPU has it
    cfg = load_config("cluster_configs/cpu_smoke.yaml", ["learner.lr=1e-6", "rollout.max_new_tokens=64"])
    cfg = resolve_auto_dtypes(cfg)
    dtype = cfg.model.dtype
    learner = start_actor("learner", cfg, path, actor_class=PerParamLearner, master_port=free_port())
    worker = start_actor("rollout", cfg, path, actor_class=PerParamRollout)
    gather({"learner": learner.ready.remote(), "rollout": worker.ready.remote()}, "start")
    learners, rollouts = LearnerGroup([learner]), RolloutGroup([worker], ["rollout-0"], 1)
    rollouts.connect(learners, WeightSyncConfig(bucket_mb=bucket_mb, timeout_s=300), dtype)
    version = iter(range(1, 10**6))

    def bucketed():
        return rollouts.sync(next(version))

    stats = bucketed()  # warm-up: the layout is planned and published once
    nbytes = stats["weight_sync/bytes"]

    def raw():
        gather({"learner": learner.probe_transport.remote(nbytes), "rollout": worker.probe_transport.remote(nbytes)}, "raw")

    def transfer():
        v = next(version)
        gather({"learner": learner.send_weights.remote(v), "rollout": worker.drain.remote(v)}, "transfer")

    raw()
    transfer()
    bucketed_s, transfer_s, raw_s = timed([bucketed, transfer, raw], repeats)

    n_params = len(ray.get(learner.parameter_names.remote()))

    def per_param():
        ray.get(worker.begin.remote())
        for index in range(n_params):  # a blocking round trip per parameter
            v = next(version)
            ray.get([learner.send_one.remote(v, index), worker.receive_one.remote(v)])
        ray.get(worker.end.remote(v))

    (per_param_s,) = timed([per_param], 3)

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
        "weight_sync/dtype": dtype,
        "weight_sync/bytes": int(nbytes),
        "weight_sync/parameters": n_params,
        "weight_sync/bucket_mb": bucket_mb,
        "weight_sync/view_buckets": stats["weight_sync/view_buckets"],
        "weight_sync/buckets": stats["weight_sync/buckets"],
        "weight_sync/bucketed_s": bucketed_s,
        "weight_sync/transfer_s": transfer_s,
        "weight_sync/per_param_s": per_param_s,
        "weight_sync/raw_broadcast_s": raw_s,
        "weight_sync/per_param_over_bucketed": per_param_s / bucketed_s,
        "weight_sync/bucketed_over_raw": bucketed_s / raw_s,
        "weight_sync/transfer_over_raw": transfer_s / raw_s,
        "weight_sync/bucketed_gb_per_s": nbytes / bucketed_s / 1e9,
        "learner/tokens_per_s": train["learner/tokens_per_s"],
    }


def main(argv: list[str] | None = None) -> dict:
    from mogrpo.runtime import init_ray

    init_ray(None, num_cpus=4, runtime_env={"env_vars": worker_env(1)})
    results = run()
    print_table(f"weight sync (SmolLM2-135M, {results['weight_sync/dtype']}, gloo, Ray actors on both ends)", results)
    merge_results(results)
    return results


if __name__ == "__main__":
    main()
