"""Placement: a pure function from the run config to Ray bundles, one per actor, and the
slice of bundles each role gets. Testable without Ray."""

from __future__ import annotations

from dataclasses import dataclass

from mogrpo.config import RunConfig


@dataclass(frozen=True)
class Placement:
    bundles: list[dict[str, float]]  # one per actor, in the order of the slices below
    learner: list[int]  # bundle index of each learner rank
    rollout: list[int]  # bundle index of each rollout worker
    reward: list[int]  # bundle index of each reward replica
    strategy: str

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                out[key] = out.get(key, 0.0) + value
        return out


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}


def plan_placement(cfg: RunConfig) -> Placement:
    """Learner ranks first (rank 0 hosts the sync store), then rollout workers, then reward replicas."""
    bundles: list[dict[str, float]] = []

    def add(n: int, cpus: float, gpus: float) -> list[int]:
        start = len(bundles)
        bundles.extend(_bundle(cpus, gpus) for _ in range(n))
        return list(range(start, start + n))

    learner = add(cfg.learner.num_workers, cfg.learner.num_cpus, cfg.learner.num_gpus)
    rollout_gpus = cfg.rollout.num_gpus * cfg.rollout.tensor_parallel_size
    rollout = add(cfg.rollout.num_workers, cfg.rollout.num_cpus, rollout_gpus)
    reward = add(cfg.reward.num_replicas, cfg.reward.num_cpus, cfg.reward.num_gpus)
    return Placement(bundles, learner, rollout, reward, cfg.cluster.placement_strategy)
