"""Starting the run's actors in their placement-group bundles, waiting until each is
ready (or failing with its name), and logging which actor landed on which node."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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


def _options(pg, bundle: int, bundle_resources: dict, omp_threads: int, extra_env: dict | None = None,
             heap_malloc: bool = True):
    return {
        "num_cpus": bundle_resources["CPU"],
        "num_gpus": bundle_resources.get("GPU", 0),
        "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle),
        "runtime_env": {"env_vars": worker_env(omp_threads, extra_env, heap_malloc)},
        "max_restarts": 0,
    }


def rollout_spawner(cfg: RunConfig, pg, placement: Placement, policy_path: Path, names: list[str]):
    """A function that starts rollout worker i in its bundle (at the start, and again to
    replace a worker that died)."""
    from rollout.worker import RolloutWorker

    vllm_env = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.cpu_kv_cache_gib)}
    lora_adapter = cfg.learner.lora.peft_kwargs() if cfg.learner.lora.syncs_adapters else None

    def spawn(i: int):
        bundle = placement.rollout[i]
        options = _options(pg, bundle, placement.bundles[bundle], cfg.rollout.omp_threads, vllm_env)
        return ray.remote(RolloutWorker).options(**options).remote(
            str(policy_path),
            name=names[i],
            dtype=cfg.model.dtype,
            max_model_len=cfg.model.max_model_len,
            seed=cfg.seed + i,
            tensor_parallel_size=cfg.rollout.tensor_parallel_size,
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
            enforce_eager=cfg.rollout.enforce_eager,
            enable_prefix_caching=cfg.rollout.enable_prefix_caching,
            trust_remote_code=cfg.model.trust_remote_code,
            lora_adapter=lora_adapter,
        )

    return spawn


def start_actors(cfg: RunConfig, placement: Placement, policy_path: Path, reward_path: Path) -> Actors:
    """Create every actor; returns once all are ready. Learner rank 0 comes first, so its
    node hosts DeepSpeed's rendezvous."""
    from learner.actor import LearnerWorker

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

    n_learners = cfg.learner.num_workers
    learners = [
        ray.remote(LearnerWorker).options(**_options(pg, b, placement.bundles[b], cfg.learner.omp_threads,
                                                     heap_malloc=False)).remote(
            str(policy_path),
            cfg.learner,
            rank=rank,
            world_size=n_learners,
            master_addr=ds_master["ip"],
            master_port=ds_master["port"],
            group_size=cfg.rollout.group_size,
            max_new_tokens=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            total_steps=cfg.steps,
            seed=cfg.seed,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        for rank, b in enumerate(placement.learner)
    ]
    rollout_names = [f"rollout-{i}" for i in range(cfg.rollout.num_workers)]
    spawn_rollout = rollout_spawner(cfg, pg, placement, policy_path, rollout_names)
    workers = [spawn_rollout(i) for i in range(len(rollout_names))]
    rewards = [
        ray.remote(RewardActor).options(**_options(pg, b, placement.bundles[b], cfg.reward.omp_threads)).remote(
            model_path=str(reward_path),
            aggregation=cfg.reward.aggregation,
            max_batch_size=cfg.reward.max_batch_size,
            max_wait_ms=cfg.reward.max_wait_ms,
            omp_threads=cfg.reward.omp_threads,
        )
        for b in placement.reward
    ]
    reward_names = [f"reward-{i}" for i in range(len(rewards))]
    rollout = RolloutGroup(workers, rollout_names, cfg.rollout.tensor_parallel_size, spawn_rollout)
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
