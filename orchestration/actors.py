"""Starting the run's actors in their placement-group bundles, waiting until each is
ready (or failing with its name), and logging which actor landed on which node."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from mogrpo.config import RunConfig
from mogrpo.runtime import worker_env
from reward_service.actor import RewardActor
from orchestration.groups import LearnerGroup, RewardGroup, RolloutGroup, gather
from orchestration.placement import Placement

log = logging.getLogger("mogrpo")


@dataclass
class Actors:
    learner: LearnerGroup
    rollout: RolloutGroup
    reward: RewardGroup
    pg: object
    spawn_learner: Callable[[], list]  # learner_spawner(): a new set of learner ranks
    locations: dict[str, dict] = field(default_factory=dict)  # actor_locations(): where each actor runs

    def shutdown(self) -> None:
        for handle in self.learner.handles + self.rollout.handles + self.reward.handles:
            ray.kill(handle, no_restart=True)
        remove_placement_group(self.pg)

    def replace_learner(self, timeout_s: float) -> None:
        """Kill every learner rank and start a new group (a collective cannot take in a new rank)."""
        self.learner.kill()
        self.learner = LearnerGroup(self.spawn_learner(), self.learner.timeouts)
        gather({n: h.ready.remote() for n, h in zip(self.learner.names, self.learner.handles)},
               "restarting the learner", timeout_s)


def actor_locations(pg, placement: Placement) -> dict[str, dict]:
    """Where each actor's bundle landed: {name: {bundle, node_id, address}}."""
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    bundle_nodes = placement_group_table(pg)["bundles_to_node_id"]
    return {name: {"bundle": b, "node_id": bundle_nodes.get(b), "address": nodes.get(bundle_nodes.get(b))}
            for name, b in zip(placement.names(), placement.learner + placement.rollout + placement.reward)}


def live_node_resources() -> list[dict[str, float]]:
    """Total resources of each live node of the cluster this driver is connected to."""
    return [dict(n["Resources"]) for n in ray.nodes() if n["Alive"]]


@ray.remote(num_cpus=0)
def _where() -> dict:
    from mogrpo.runtime import free_port, node_ip

    return {"ip": node_ip(), "port": free_port()}


def start_actor(role: Literal["learner", "rollout", "reward"], cfg: RunConfig, model_path: str | Path,
                *, placement: dict | None = None, actor_class: type | None = None, **kwargs):
    """Start one actor of `role` from the run config: the learner rank (`rank`, `world_size`,
    `master_addr`, `master_port` in kwargs), rollout worker (`index`) or reward replica.
    Its threads and environment come from the role's config section; `placement` adds Ray
    options (resources, a placement-group bundle); `actor_class` a subclass to start instead
    (benchmarks). Tests and benchmarks start actors here too."""
    from learner.actor import LearnerWorker
    from rollout.worker import RolloutWorker

    overlap = cfg.rollout.max_staleness > 0  # actors run at once: idle threads must not spin
    if role == "learner":
        cls, section, args = LearnerWorker, cfg.learner, (str(model_path), cfg)
        env = worker_env(section.omp_threads, passive_omp=overlap)
    elif role == "rollout":
        cls, section, args = RolloutWorker, cfg.rollout, (str(model_path), cfg)
        env = worker_env(section.omp_threads, heap_malloc=True, passive_omp=overlap)
    else:
        cls, section, args = RewardActor, cfg.reward, (str(model_path), cfg.reward)
        env = worker_env(section.omp_threads, heap_malloc=True, passive_omp=overlap)
    env.update(section.env_vars)
    options = {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus, "runtime_env": {"env_vars": env},
               "max_restarts": 0, **(placement or {})}
    if role == "rollout" and cfg.rollout.partial_rollout:  # its chunks and a weight update run at once
        options["max_concurrency"] = cfg.rollout.max_chunks_per_worker + 2
    return ray.remote(actor_class or cls).options(**options).remote(*args, **kwargs)


def in_bundle(pg, placement: Placement, bundle: int) -> dict:
    """Ray options that put an actor in `bundle` of the run's placement group."""
    resources = placement.bundles[bundle]
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": resources["CPU"], "num_gpus": resources.get("GPU", 0), **({"resources": custom} if custom else {}),
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle)}


def rollout_spawner(cfg: RunConfig, pg, placement: Placement, policy_path: Path):
    """A function that starts rollout worker i in its bundle (at the start, and again to
    replace a worker that died)."""

    def spawn(i: int):
        return start_actor("rollout", cfg, policy_path, placement=in_bundle(pg, placement, placement.rollout[i]), index=i)

    return spawn


def reward_spawner(cfg: RunConfig, pg, placement: Placement, reward_path: Path):
    """A function that starts reward replica i in its bundle (at the start, and again to replace one that died)."""

    def spawn(i: int):
        return start_actor("reward", cfg, reward_path, placement=in_bundle(pg, placement, placement.reward[i]))

    return spawn


def learner_spawner(cfg: RunConfig, pg, placement: Placement, policy_path: Path):
    """A function that starts every learner rank in its bundle, around a fresh DeepSpeed
    rendezvous on rank 0's node (at the start, and again to replace a group that lost a rank)."""

    def spawn() -> list:
        master = ray.get(_where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=placement.learner[0])).remote())
        return [start_actor("learner", cfg, policy_path, placement=in_bundle(pg, placement, b), rank=rank,
                            world_size=cfg.learner.num_workers, master_addr=master["ip"], master_port=master["port"])
                for rank, b in enumerate(placement.learner)]

    return spawn


def start_actors(cfg: RunConfig, placement: Placement, policy_path: Path, reward_path: Path) -> Actors:
    """Create every actor; returns once all are ready. Learner rank 0 comes first, so its
    node hosts DeepSpeed's rendezvous."""
    pg = placement_group(placement.bundles, strategy=placement.strategy)
    timeout = cfg.cluster.actor_start_timeout_s
    ready, _ = ray.wait([pg.ready()], timeout=timeout)
    if not ready:
        remove_placement_group(pg)
        raise RuntimeError(
            f"the cluster cannot place the run's actors within {timeout:g}s: they need {placement.totals()} "
            f"in {len(placement.bundles)} bundles ({placement.strategy}); the cluster has {ray.cluster_resources()}"
        )
    spawn_learner = learner_spawner(cfg, pg, placement, policy_path)
    learners = spawn_learner()
    spawn_rollout = rollout_spawner(cfg, pg, placement, policy_path)
    workers = [spawn_rollout(i) for i in range(cfg.rollout.num_workers)]
    spawn_reward = reward_spawner(cfg, pg, placement, reward_path)
    rewards = [spawn_reward(i) for i in range(len(placement.reward))]
    rollout_names = [f"rollout-{i}" for i in range(cfg.rollout.num_workers)]
    reward_names = [f"reward-{i}" for i in range(len(rewards))]
    rollout = RolloutGroup(workers, rollout_names, cfg.rollout.tensor_parallel_size, spawn_rollout,
                           max_restarts=cfg.rollout.max_restarts, start_timeout_s=timeout, timeouts=cfg.timeouts)
    reward = RewardGroup(rewards, reward_names, spawn_reward, cfg.reward.max_restarts, timeout, cfg.timeouts)
    actors = Actors(LearnerGroup(learners, cfg.timeouts), rollout, reward, pg, spawn_learner)
    named = {**{n: h.ready.remote() for n, h in zip(actors.learner.names, learners)},
             **{n: h.ready.remote() for n, h in zip(rollout_names, workers)},
             **{n: h.labels.remote() for n, h in zip(reward_names, rewards)}}
    try:
        info = gather(named, "starting actors", timeout_s=timeout)
    except Exception:
        actors.shutdown()
        raise
    where = actor_locations(pg, placement)
    for name, details in info.items():
        log.info("%s ready on node %s (%s): %s", name, where[name]["address"], (where[name]["node_id"] or "?")[:12],
                 details)
    actors.locations = where
    return actors
