"""Placement: a pure function from the run config to Ray bundles, one per actor, and the
slice of bundles each role gets; and a check, before any actor starts, that the cluster's
nodes can hold those bundles. Testable without Ray."""

from __future__ import annotations

from dataclasses import dataclass

from mogrpo.config import RunConfig
from mogrpo.errors import UserError


class PlacementError(UserError):
    """The cluster cannot hold the run's actors; the message names what is missing."""


@dataclass(frozen=True)
class Placement:
    bundles: list[dict[str, float]]  # one per actor, in the order of the slices below
    learner: list[int]  # bundle index of each learner rank
    rollout: list[int]  # bundle index of each rollout worker
    reward: list[int]  # bundle index of each reward replica
    strategy: str

    def names(self) -> list[str]:
        """The actor of each bundle: learner-0, ..., rollout-0, ..., reward-0, ..."""
        return ([f"learner-{i}" for i in range(len(self.learner))] + [f"rollout-{i}" for i in range(len(self.rollout))]
                + [f"reward-{i}" for i in range(len(self.reward))])

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                out[key] = out.get(key, 0.0) + value
        return out


def _bundle(cpus: float, gpus: float, resources: dict[str, float]) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **resources}


def plan_placement(cfg: RunConfig) -> Placement:
    """Learner ranks first (rank 0 hosts the sync store), then rollout workers, then reward replicas."""
    bundles: list[dict[str, float]] = []

    def add(n: int, cpus: float, gpus: float, resources: dict[str, float]) -> list[int]:
        start = len(bundles)
        bundles.extend(_bundle(cpus, gpus, resources) for _ in range(n))
        return list(range(start, start + n))

    learner = add(cfg.learner.num_workers, cfg.learner.num_cpus, cfg.learner.num_gpus, cfg.learner.resources)
    rollout_gpus = cfg.rollout.num_gpus * cfg.rollout.tensor_parallel_size
    rollout = add(cfg.rollout.num_workers, cfg.rollout.num_cpus, rollout_gpus, cfg.rollout.resources)
    reward = add(cfg.reward.num_replicas, cfg.reward.num_cpus, cfg.reward.num_gpus, cfg.reward.resources)
    return Placement(bundles, learner, rollout, reward, cfg.cluster.placement_strategy)


def check_fits(placement: Placement, nodes: list[dict[str, float]]) -> None:
    """Raise `PlacementError` unless the bundles fit the nodes' resources under the
    placement strategy (largest bundles first, each on the first node with room; STRICT_PACK:
    all on one node; STRICT_SPREAD: each on its own node). The message names the actors that
    find no room, what they need, and what every node has."""
    def fmt(r: dict[str, float]) -> str:
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(r.items()) if v) + "}"

    need = placement.totals()
    short = {k: (v, sum(n.get(k, 0.0) for n in nodes)) for k, v in need.items()}
    short = {k: v for k, v in short.items() if v[0] > v[1] + 1e-9}
    cluster = "; ".join(f"node {i}: {fmt(n)}" for i, n in enumerate(nodes)) or "no node"
    if short:
        missing = ", ".join(f"{k} {want:g} (the cluster has {have:g})" for k, (want, have) in sorted(short.items()))
        raise PlacementError(f"the run needs {missing} for its {len(placement.bundles)} actors; {cluster}")
    names = placement.names()
    if placement.strategy == "STRICT_PACK":
        if not any(all(n.get(k, 0.0) + 1e-9 >= v for k, v in need.items()) for n in nodes):
            raise PlacementError(f"placement_strategy STRICT_PACK puts every actor on one node, which needs "
                                 f"{fmt(need)}; {cluster}")
        return
    free = [dict(n) for n in nodes]
    used: set[int] = set()
    order = sorted(range(len(placement.bundles)), reverse=True,
                   key=lambda b: (placement.bundles[b].get("GPU", 0.0), placement.bundles[b]["CPU"]))
    for b in order:
        bundle = placement.bundles[b]
        fits = [i for i, n in enumerate(free) if all(n.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())
                and not (placement.strategy == "STRICT_SPREAD" and i in used)]
        if not fits:
            raise PlacementError(f"{names[b]} needs {fmt(bundle)} on one node, and no node has that left once the "
                                 f"actors before it are placed ({placement.strategy}); {cluster}")
        for k, v in bundle.items():
            free[fits[0]][k] -= v
        used.add(fits[0])
