"""Starting the run's actors in their placement-group bundles, waiting until each is
ready (or failing with its name), and logging which actor landed on which node."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from mogrpo.config import RunConfig
from mogrpo.runtime import worker_env
from reward_service.actor import RewardActor, RewardClient
from orchestration.groups import LearnerGroup, RolloutGroup, gather
from orchestration.placement import Placement

log = logging.getLogger("mogrpo")


@dataclass
class Actors:
    learner: LearnerGroup
    rollout: RolloutGroup
    reward: RewardClient
    reward_names: list[str]
    pg: object

    def shutdown(self) -> None:
        for handle in self.learner.handles + self.rollout.handles + self.reward.actors:
            ray.kill(handle, no_restart=True)
        remove_placement_group(self.pg)


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

    if role == "learner":
        cls, section, args = LearnerWorker, cfg.learner, (str(model_path), cfg)
        env = worker_env(section.omp_threads, heap_malloc=False)
    elif role == "rollout":
        cls, section, args = RolloutWorker, cfg.rollout, (str(model_path), cfg)
        env = worker_env(section.omp_threads, {"VLLM_CPU_KVCACHE_SPACE": str(section.cpu_kv_cache_gib)})
    else:
        cls, section, args = RewardActor, cfg.reward, (str(model_path), cfg.reward)
        env = worker_env(section.omp_threads)
    options = {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus, "runtime_env": {"env_vars": env},
               "max_restarts": 0, **(placement or {})}
    return ray.remote(actor_class or cls).options(**options).remote(*args, **kwargs)


def in_bundle(pg, placement: Placement, bundle: int) -> dict:
    """Ray options that put an actor in `bundle` of the run's placement group."""
    resources = placement.bundles[bundle]
    return {"num_cpus": resources["CPU"], "num_gpus": resources.get("GPU", 0),
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle)}


def rollout_spawner(cfg: RunConfig, pg, placement: Placement, policy_path: Path):
    """A function that starts rollout worker i in its bundle (at the start, and again to
    replace a worker that died)."""

    def spawn(i: int):
        return start_actor("rollout", cfg, policy_path, placement=in_bundle(pg, placement, placement.rollout[i]), index=i)

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
    ds_master = ray.get(_where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=placement.learner[0])).remote())

    learners = [start_actor("learner", cfg, policy_path, placement=in_bundle(pg, placement, b), rank=rank,
                            world_size=cfg.learner.num_workers, master_addr=ds_master["ip"],
                            master_port=ds_master["port"])
                for rank, b in enumerate(placement.learner)]
    spawn_rollout = rollout_spawner(cfg, pg, placement, policy_path)
    workers = [spawn_rollout(i) for i in range(cfg.rollout.num_workers)]
    rewards = [start_actor("reward", cfg, reward_path, placement=in_bundle(pg, placement, b)) for b in placement.reward]
    rollout_names = [f"rollout-{i}" for i in range(cfg.rollout.num_workers)]
    reward_names = [f"reward-{i}" for i in range(len(rewards))]
    rollout = RolloutGroup(workers, rollout_names, cfg.rollout.tensor_parallel_size, spawn_rollout,
                           max_restarts=cfg.rollout.max_restarts, start_timeout_s=timeout)
    actors = Actors(LearnerGroup(learners), rollout, RewardClient(rewards, cfg.reward.aggregation), reward_names, pg)
    named = {**{n: h.ready.remote() for n, h in zip(actors.learner.names, learners)},
             **{n: h.ready.remote() for n, h in zip(rollout_names, workers)},
             **{n: h.labels.remote() for n, h in zip(reward_names, rewards)}}
    try:
        info = gather(named, "starting actors", timeout_s=timeout)
    except Exception:
        actors.shutdown()
        raise
    for name, details in info.items():
        log.info("%s ready: %s", name, details)
    return actors
