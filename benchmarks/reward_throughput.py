"""Reward scoring throughput through the reward actor against a bare in-process forward
on the same inputs, in one run.

    .venv/bin/python -m benchmarks.reward_throughput [--responses 256] [--threads 1]

One "step" is `responses` (prompt, response) pairs in groups of `group_size`, sent to
the actor as `requests` concurrent calls (as rollout workers hand in their groups); the
bare side scores the same pairs with `RewardModel.score` in this process, with the same
thread count and the same forward batch size. Rounds alternate bare / actor and each
side's median is reported. Merges into runs/bench/results.json:
`reward/actor_responses_per_s`, `reward/bare_responses_per_s`, `reward/actor_over_bare`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_MODEL = Path("runs/reward-model")


def make_inputs(n: int, group_size: int) -> tuple[list[str], list[str], list[int], list[int]]:
    """`n` realistic pairs: XSTest prompts and completions read from the shared data when
    present, else the built-in hand-written examples, cycled with a suffix."""
    from reward_training.builtin_examples import builtin_examples
    from reward_training.dataset import default_data_dir
    from reward_training.sources import read_xstest

    data = default_data_dir() / "xstest"
    rows = read_xstest(data) if data.is_dir() else builtin_examples()
    prompts, responses = [], []
    for i in range(n):
        r = rows[(i // group_size * 7 + i) % len(rows)]
        prompts.append(r.prompt)
        responses.append(r.response if i < len(rows) else f"{r.response} ({i})")
    groups = [i // group_size for i in range(n)]
    lengths = [len(r.split()) for r in responses]
    return prompts, responses, groups, lengths


def _model_path(model: str | None, tmp: Path) -> Path:
    """The trained model if there is one; else a fresh one (throughput does not depend on head weights)."""
    from mogrpo.config.reward import DEFAULT_LABELS
    from mogrpo.reward_model import SPEC_FILE, ModelSpec, build_reward_model

    path = Path(model) if model else DEFAULT_MODEL
    if (path / SPEC_FILE).is_file():
        return path
    return build_reward_model("minilm-l6", ModelSpec(labels=list(DEFAULT_LABELS))).save(tmp / "reward-model")


def run(model: str | None = None, responses: int = 256, group_size: int = 4, requests: int = 8,
        max_batch_size: int = 64, max_wait_ms: float = 5.0, threads: int = 1, rounds: int = 3) -> dict:
    """Measure both sides; returns the flat result keys."""
    import ray
    import torch

    from mogrpo.runtime import init_ray, worker_env
    from mogrpo.config import RunConfig
    from mogrpo.reward_model import load_reward_model
    from orchestration.actors import start_actor

    prompts, texts, groups, lengths = make_inputs(responses, group_size)
    per = -(-responses // requests)
    slices = [(s, min(s + per, responses)) for s in range(0, responses, per)]
    started_ray = not ray.is_initialized()
    with tempfile.TemporaryDirectory(prefix="reward-bench-") as tmp:
        path = _model_path(model, Path(tmp))
        torch.set_num_threads(threads)
        bare_model = load_reward_model(path, threads=threads)
        init_ray(None, num_cpus=max(2, threads), num_gpus=0, runtime_env={"env_vars": worker_env(threads)})
        try:
            cfg = RunConfig(reward={"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms, "omp_threads": threads})
            actor = start_actor("reward", cfg, path)
            ray.get(actor.labels.remote())

            def bare() -> float:
                t = time.perf_counter()
                bare_model.score(prompts, texts, batch_size=max_batch_size)
                return time.perf_counter() - t

            def through_actor() -> float:
                t = time.perf_counter()
                ray.get([actor.score.remote(prompts[s:e], texts[s:e], groups[s:e], lengths[s:e]) for s, e in slices])
                return time.perf_counter() - t

            bare(), through_actor()  # warm-up: first-call allocations on both sides
            bare_s, actor_s = [], []
            for _ in range(rounds):
                bare_s.append(bare())
                actor_s.append(through_actor())
            stats = ray.get(actor.stats.remote())
            ray.kill(actor)
        finally:
            if started_ray:
                ray.shutdown()
    bare_rate = responses / statistics.median(bare_s)
    actor_rate = responses / statistics.median(actor_s)
    return {
        "reward/actor_responses_per_s": round(actor_rate, 2),
        "reward/bare_responses_per_s": round(bare_rate, 2),
        "reward/actor_over_bare": round(actor_rate / bare_rate, 3),
        "reward/bench_responses": responses,
        "reward/bench_requests_per_step": len(slices),
        "reward/bench_threads": threads,
        "reward/bench_mean_flush": round(stats["mean_flush"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results import merge_results, print_table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help=f"reward model folder (default {DEFAULT_MODEL}, else a fresh one)")
    p.add_argument("--responses", type=int, default=256)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--requests", type=int, default=8, help="concurrent calls the step is split into")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    result = run(a.model, a.responses, a.group_size, a.requests, a.max_batch_size, a.max_wait_ms, a.threads, a.rounds)
    print_table("reward scoring throughput (actor vs bare forward, same inputs)", result)
    merge_results(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
