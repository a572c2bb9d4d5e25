"""Multi-objective GRPO driver: the whole schedule of a run, every wait visible.

    python -m orchestration.train --config cluster_configs/cpu_smoke.yaml [dotted.key=value ...]
    ray job submit --working-dir . -- python -m orchestration.train --config cluster_configs/multi_gpu.yaml

0. Pre-flight, before any actor: config, policy model, prompts, reward model.
1. Ray, placement group, actors (learner ranks, vLLM rollout workers, reward replicas).
2. The weight-sync group between learner rank 0 and every vLLM worker.
3. Resume from the newest complete checkpoint, if any.
4. Each step: generate groups -> score -> train -> broadcast weights -> log -> checkpoint.
   With `async_rollout` the next step's groups are generated while the learner trains.
5. Save the final policy as a Hugging Face folder in `<run>/final/`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from mogrpo.atomic import atomic_write_text
from mogrpo.config import ConfigError, RunConfig, load_config, to_yaml
from mogrpo.errors import UserError, report
from mogrpo.hardware import resolve_auto_dtypes
from mogrpo.metrics import MetricsLogger, status_line, timed
from mogrpo.models import resolve_model
from mogrpo.batch import Prompt
from mogrpo.prompts import PromptSampler, load_prompts, normalise_prompt
from orchestration import checkpoint
from orchestration.placement import plan_placement
from orchestration.steps import (
    held_out_refusals,
    keep_informative,
    save_rollouts,
    score,
    start_generation,
    step_metrics,
)

log = logging.getLogger("mogrpo")


def preflight(cfg: RunConfig):
    """Everything that can fail without starting an actor."""
    from transformers import AutoTokenizer

    from learner.losses import loss_variant
    from mogrpo.reward_model import find_reward_model
    from reward_service.actor import check_model_aggregation

    try:
        loss_variant(cfg.learner.loss.variant)
    except ValueError as err:
        raise ConfigError(f"learner.loss.variant: {err}") from None
    policy_path = resolve_model(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(policy_path, trust_remote_code=cfg.model.trust_remote_code)
    prompts, report = load_prompts(cfg.data, tokenizer, cfg.seed)
    log.info("prompts: %d (%s)", len(prompts), report.summary())
    eval_prompts = held_out_prompts(cfg, tokenizer, prompts) if cfg.eval.every else []
    reward_path = find_reward_model(cfg.reward.model, cfg.reward.fit_if_missing)
    if reward_path is None:  # the smoke job's quick fit: the one use of the trainer here
        from reward_training.train import ensure_reward_model

        reward_path = ensure_reward_model(cfg.reward.model, fit_if_missing=True)
    labels = check_model_aggregation(str(reward_path), cfg.reward.aggregation)
    return policy_path, prompts, eval_prompts, reward_path, labels


def held_out_prompts(cfg: RunConfig, tokenizer, train_prompts: list) -> list:
    """The in-training evaluation's prompts (a seeded sample of `eval.sources`), less any
    that the run also trains on (compared after normalising case, spacing and punctuation)."""
    data = cfg.data.model_copy(update={"sources": cfg.eval.sources})
    prompts, report = load_prompts(data, tokenizer, cfg.seed)
    seen = {normalise_prompt(p.text) for p in train_prompts}
    held = [p for p in prompts if normalise_prompt(p.text) not in seen]
    log.info("in-training evaluation: %d held-out prompts (%s); %d dropped, also in data.sources", len(held),
             report.summary(), len(prompts) - len(held))
    return [Prompt(i, p.text, p.token_ids, p.tag) for i, p in enumerate(held)]


def run(cfg: RunConfig) -> Path:
    from mogrpo.runtime import init_ray, worker_env
    from orchestration.actors import start_actors

    # 0. pre-flight
    cfg = resolve_auto_dtypes(cfg)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    policy_path, prompts, eval_prompts, reward_path, labels = preflight(cfg)
    resume = checkpoint.read_latest(run_dir) if cfg.checkpoint.resume else None
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))

    # 1. Ray and actors
    placement = plan_placement(cfg)
    init_ray(cfg.cluster.ray_address, num_cpus=cfg.cluster.num_cpus or max(2, int(np.ceil(placement.totals()["CPU"]))),
             num_gpus=cfg.cluster.num_gpus, include_dashboard=cfg.cluster.include_dashboard,
             dashboard_host=cfg.cluster.dashboard_host, object_store_memory_gib=cfg.cluster.object_store_memory_gib,
             runtime_env={"env_vars": worker_env(1)})
    t0 = time.perf_counter()
    actors = start_actors(cfg, placement, policy_path, reward_path)
    log.info("actors ready in %.1fs", time.perf_counter() - t0)
    try:
        # 2. weight-sync group: learner rank 0 + every vLLM worker
        actors.rollout.connect(actors.learner, cfg.weight_sync, wire_dtype=cfg.model.dtype)

        # 3. resume
        sampler = PromptSampler(prompts, cfg.seed, shuffle=cfg.data.shuffle)
        prompt_tags = [p.tag for p in prompts]
        first_step, version = 1, 0
        if resume is not None:
            actors.learner.call("load_checkpoint", str(checkpoint.checkpoint_dir(run_dir)), resume.tag)
            sampler.position, version, first_step = resume.prompt_position, resume.policy_version, resume.step + 1
            actors.rollout.sync(version)
            log.info("resumed from %s: step %d, policy version %d", resume.tag, resume.step, version)
        logger = MetricsLogger(run_dir, cfg.logging.tensorboard, resume_after_step=resume.step if resume else None)

        # 4. the loop. Calls on the rollout group survive workers that die (they are
        # replaced, brought to the current policy, and the call runs again).
        def evaluate_held_out(step: int) -> dict:
            due = cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.steps)
            return held_out_refusals(actors, eval_prompts, cfg.eval.max_new_tokens, version) if due else {}

        if cfg.eval.every and first_step == 1:  # the starting policy, as step 0
            logger.log(0, {"policy_version": version, **evaluate_held_out(0)})

        pending, ready = start_generation(actors, sampler, cfg, first_step, version), None
        for step in range(first_step, cfg.steps + 1):
            times: dict[str, float] = {}
            with timed(times, "step"):
                with timed(times, "generate"):
                    batch = ready if ready is not None else actors.rollout.finish_generate(pending)
                batch.check_groups(cfg.rollout.group_size)

                with timed(times, "reward"):
                    batch = score(actors, batch)
                    train_batch, sampling_stats = batch, {}
                    if cfg.learner.loss.dynamic_sampling:
                        train_batch, sampling_stats = keep_informative(actors, sampler, cfg, batch, step, version)

                resume_position = sampler.position  # prompts of this step, not of the next one
                prefetch = cfg.async_rollout and step < cfg.steps
                if prefetch:  # the next groups come from the current policy: one step off-policy
                    pending = start_generation(actors, sampler, cfg, step + 1, version)
                with timed(times, "train"):  # advantages, loss and optimizer step, in the learner
                    train = actors.learner.train(train_batch) if len(train_batch) else {"skipped": 1}
                # Workers take the update only after they finish generating.
                ready = actors.rollout.finish_generate(pending) if prefetch else None

                with timed(times, "sync"):
                    sync = {}
                    if len(train_batch):
                        version += 1
                        sync = actors.rollout.sync(version)
                held_out = evaluate_held_out(step)
                if ready is None and step < cfg.steps:
                    pending = start_generation(actors, sampler, cfg, step + 1, version)

            metrics = {"policy_version": version, **step_metrics(batch, train, labels, prompt_tags), **sampling_stats,
                       **sync, **held_out, "rollout/restarts": actors.rollout.restarts,
                       **{f"time/{k}": v for k, v in times.items()}}
            logger.log(step, metrics)
            if cfg.logging.log_rollouts:
                save_rollouts(run_dir, step, batch)
            if step % cfg.logging.status_every == 0 or step == cfg.steps:
                print(status_line(step, cfg.steps, metrics, labels), flush=True)
            if cfg.checkpoint.every and (step % cfg.checkpoint.every == 0) and step < cfg.steps:
                tag = checkpoint.tag_for(step)
                actors.learner.call("save_checkpoint", str(checkpoint.checkpoint_dir(run_dir)), tag)
                checkpoint.commit(run_dir, checkpoint.DriverState(step, version, resume_position, tag), cfg.checkpoint.keep)
        logger.close()

        # 5. final policy
        final = run_dir / "final"
        actors.learner.call("save_pretrained", str(final))
        print(f"final policy (version {version}) saved to {final}", flush=True)
        return final
    finally:
        actors.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML run config (see cluster_configs/); defaults if omitted")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. learner.lr=1e-6 steps=10")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(load_config(args.config, args.overrides))
    except UserError as err:
        return report(err, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
