"""The pipeline at `rollout.max_staleness` 0 (synchronous), 1 and 2, and 1 with
`rollout.partial_rollout` (arm `async1_partial`), measured in one run with
SmolLM2 and real actors (cpu_smoke.yaml: one vLLM worker, one ZeRO-2 learner, one reward
replica; 8 prompts x 4 responses x <= 64 tokens a step):

- `pipeline/<arm>_step_s`: the median step time after the first `--warmup` steps;
- `pipeline/<arm>_learner_idle`, `pipeline/<arm>_rollout_idle`: median shares of a step the
  learner waited for its batch and the workers had nothing to generate;
- `pipeline/<arm>_reward_gain_per_step`: slope of the mean reward over the run's steps;
- `pipeline/<arm>_reward_minus_sync`: the arm's mean reward minus the synchronous run's, step
  by step (every arm sees the same prompts in the same order, so this pairs them);
- `pipeline/async1_over_sync`, `pipeline/async2_over_sync`, `pipeline/async1_partial_over_sync`:
  step-time ratios (the target for async1 is <= 0.8 on a 2-core CPU);
- `pipeline/<arm>_mixed_version_share`: median share of a batch's responses that span a weight
  update (above 0 only with partial rollout).

Each arm is a real training run (`python -m orchestration.train`) in runs/bench/pipeline/<arm>;
the arms run one after another, in `--rounds` interleaved rounds (sync, async1, async2, async1_partial, sync, ...),
each round a fresh run, and the medians pool the rounds.

    .venv/bin/python -m benchmarks.pipeline [--steps 6] [--rounds 1]     (also part of `make bench`)
    .venv/bin/python -m benchmarks.pipeline --from-runs     (summarise the runs already in runs/bench/pipeline)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.results import merge_results, print_table
from orchestration import report

ARMS = {"sync": (0, []), "async1": (1, []), "async2": (2, []), "async1_partial": (1, ["rollout.partial_rollout=true"])}
"""arm -> (rollout.max_staleness, its own overrides)"""
OUT = Path("runs/bench/pipeline")


def read_metrics(name: str) -> list[dict]:
    """The arm's training steps (not the held-out evaluation's step 0)."""
    return [r for r in report.read_metrics(OUT / name) if r["step"] >= 1]


def run_arm(name: str, k: int, steps: int, extra: list[str]) -> list[dict]:
    overrides = [f"output_dir={OUT}", f"run_name={name}", f"steps={steps}", f"rollout.max_staleness={k}",
                 "rollout.prompts_per_step=8", "rollout.group_size=4", "rollout.max_new_tokens=64",
                 "checkpoint.every=0", "checkpoint.resume=false", "logging.log_rollouts=false", *extra]
    subprocess.run([sys.executable, "-m", "orchestration.train", "--config", "cluster_configs/cpu_smoke.yaml",
                    *overrides], check=True)
    return read_metrics(name)


def summarise(runs: list[list[dict]], warmup: int) -> dict[str, float]:
    steady = [r for records in runs for r in records[warmup:]]
    gains = [np.polyfit([r["step"] for r in records], [r["reward/mean"] for r in records], 1)[0] for records in runs]
    return {"step_s": float(np.median([r["time/step"] for r in steady])),
            "learner_idle": float(np.median([r["pipeline/learner_idle"] for r in steady])),
            "rollout_idle": float(np.median([r["pipeline/rollout_idle"] for r in steady])),
            "generate_wait_s": float(np.median([r["time/generate"] for r in steady])),
            "train_s": float(np.median([r["time/train"] for r in steady])),
            "reward_gain_per_step": float(np.mean(gains)),
            "mixed_version_share": float(np.median([r.get("pipeline/mixed_version_share", 0.0) for r in steady]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of the medians")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--from-runs", action="store_true", help="summarise the last runs instead of running")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for every arm")
    args = parser.parse_args(argv)
    runs: dict[str, list[list[dict]]] = {name: [] for name in ARMS}
    for _ in range(0 if args.from_runs else args.rounds):
        for name, (k, extra) in ARMS.items():
            runs[name].append(run_arm(name, k, args.steps, [*extra, *args.overrides]))
    if args.from_runs:
        runs = {name: [read_metrics(name)] for name in ARMS}
    results = {}
    for name in ARMS:
        results.update({f"pipeline/{name}_{key}": value for key, value in summarise(runs[name], args.warmup).items()})
    for name in ("async1", "async2", "async1_partial"):
        results[f"pipeline/{name}_over_sync"] = results[f"pipeline/{name}_step_s"] / results["pipeline/sync_step_s"]
        pairs = [(a["reward/mean"], b["reward/mean"]) for arm, sync in zip(runs[name], runs["sync"])
                 for a, b in zip(arm, sync)]
        results[f"pipeline/{name}_reward_minus_sync"] = float(np.mean([a - b for a, b in pairs]))
    merge_results(results)
    print_table("pipeline: max_staleness 0 / 1 / 2 / 1 with partial rollout (runs/bench/results.json)", results)
    return results


if __name__ == "__main__":
    main()
