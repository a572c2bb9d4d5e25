"""Multi-objective GRPO driver: the whole schedule of a run, every wait visible.

    python -m orchestration.train --config cluster_configs/cpu_smoke.yaml [dotted.key=value ...]
    make submit CONFIG=cluster_configs/multi_gpu.yaml ADDRESS=http://HEAD:8265   (a Ray job: orchestration/submit.py)

0. Pre-flight, before any actor: config, policy model, prompts, reward model.
1. Ray; a check that the cluster's nodes can hold the placement; the placement group and
   actors (learner ranks, vLLM rollout workers, reward replicas), their nodes in actors.json.
2. The weight-sync group between learner rank 0 and every vLLM worker.
3. Resume from the newest complete checkpoint, if any.
4. Each step: take a batch of scored groups from the rollout stream (pipeline.py: workers
   generate chunks, each scored as soon as it is done) -> train -> broadcast weights -> log ->
   checkpoint (every `checkpoint.every` steps and the last). With `rollout.max_staleness` k > 0
   the workers go on generating, up to k steps ahead, while the learner trains.
   SIGTERM or Ctrl-C: the current step finishes, is checkpointed, the actors (and a Ray
   instance the run started) stop, and the command that resumes is printed; a step still
   generating or scoring that would not end within `checkpoint.stop_grace_s` is abandoned
   and the step before it checkpointed; a second signal stops at once.
5. Save the final policy as a Hugging Face folder in `<run>/final/`. A rerun of a finished
   run (same `steps`) finds it there and starts nothing.
"""

from __future__ import annotations

import argparse
import json
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
from mogrpo.rng import capture_rng, restore_rng
from mogrpo.tracking import check_trackers, open_trackers
from orchestration import checkpoint
from orchestration.groups import ActorFailedError
from orchestration.placement import check_fits, plan_placement
from orchestration.signals import RunStopped, StopOnSignal
from orchestration.pipeline import RolloutStream
from orchestration.steps import held_out_refusals, save_rollouts, step_metrics

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
    check_trackers(cfg.logging)
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
    from orchestration.actors import live_node_resources, start_actors

    # 0. pre-flight
    cfg = resolve_auto_dtypes(cfg)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = checkpoint.read_latest(run_dir) if cfg.checkpoint.resume else None
    if resume is not None and resume.step >= cfg.steps and checkpoint.final_is_current(run_dir, resume):
        final = checkpoint.final_dir(run_dir)
        print(f"{cfg.run_name} already finished step {resume.step} of {cfg.steps}: its final policy (version "
              f"{resume.policy_version}) is {final}; nothing to do (steps=N with N > {resume.step} trains on)",
              flush=True)
        return final
    policy_path, prompts, eval_prompts, reward_path, labels = preflight(cfg)
    checkpoint.unmark_final(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))

    # 1. Ray and actors
    placement = plan_placement(cfg)
    private_ray = init_ray(cfg.cluster.ray_address,
                           num_cpus=cfg.cluster.num_cpus or max(2, int(np.ceil(placement.totals()["CPU"]))),
                           num_gpus=cfg.cluster.num_gpus, include_dashboard=cfg.cluster.include_dashboard,
                           dashboard_host=cfg.cluster.dashboard_host,
                           object_store_memory_gib=cfg.cluster.object_store_memory_gib,
                           runtime_env={"env_vars": worker_env(1)})
    stop = StopOnSignal(cfg.checkpoint.stop_grace_s)
    trackers = open_trackers(cfg.logging, run_dir, cfg.run_name, cfg.model_dump(mode="json"), resume is not None)
    logger = MetricsLogger(run_dir, cfg.logging.tensorboard, trackers)
    status = "FAILED"
    try:
        if cfg.cluster.check_resources:
            check_fits(placement, live_node_resources())
        t0 = time.perf_counter()
        actors = start_actors(cfg, placement, policy_path, reward_path)
        log.info("actors ready in %.1fs", time.perf_counter() - t0)
        atomic_write_text(run_dir / "actors.json", json.dumps(actors.locations, indent=2))
        try:
            final = train_loop(cfg, actors, prompts, eval_prompts, labels, resume, stop, logger)
            status = "FINISHED"
            return final
        except RunStopped:
            status = "KILLED"
            raise
        finally:
            actors.shutdown()
    finally:
        logger.close(status)
        stop.restore()
        if private_ray:  # the instance this run started goes with it, also on an error or a signal
            import ray

            ray.shutdown()


def train_loop(cfg: RunConfig, actors, prompts: list[Prompt], eval_prompts: list[Prompt], labels: list[str],
               resume: checkpoint.DriverState | None, stop: StopOnSignal, logger: MetricsLogger) -> Path:
    """Steps 2-5 of the module docstring, on started actors."""
    run_dir, ckpt_dir = cfg.run_dir, str(checkpoint.checkpoint_dir(cfg.run_dir))
    # 2. weight-sync group: learner rank 0 + every vLLM worker
    actors.rollout.connect(actors.learner, cfg.weight_sync, wire_dtype=cfg.model.dtype)

    # 3. resume: the learner, the driver and the workers' weights go back to a checkpoint
    sampler = PromptSampler(prompts, cfg.seed, shuffle=cfg.data.shuffle, stratify=cfg.data.stratify_tags)
    prompt_tags = [p.tag for p in prompts]
    version, learner_restarts = 0, 0

    def rewind(to: checkpoint.DriverState | None, sync_workers: bool) -> int:
        """Put the learner and the driver at checkpoint `to` (None: the start) and, with
        `sync_workers`, the workers' weights too; returns the next step."""
        nonlocal version
        if to is not None:
            actors.learner.call("load_checkpoint", ckpt_dir, to.tag)
            restore_rng(to.rng)
        sampler.position, version = (to.prompt_position, to.policy_version) if to else (0, 0)
        if sync_workers:
            actors.rollout.sync(version)
        logger.rewind(to.step if to else None)
        return to.step + 1 if to else 1

    step = rewind(resume, sync_workers=resume is not None)  # fresh workers already hold the starting weights
    if resume is not None:
        log.info("resumed from %s: step %d, policy version %d", resume.tag, resume.step, version)

    def save(step: int, prompt_position: int, rng: dict) -> None:
        tag = checkpoint.tag_for(step)
        actors.learner.call("save_checkpoint", ckpt_dir, tag)
        if cfg.checkpoint.save_hf:
            actors.learner.call("save_pretrained", str(checkpoint.checkpoint_dir(run_dir) / tag / "hf"))
        state = checkpoint.DriverState(step, version, prompt_position, tag, rng)
        checkpoint.commit(run_dir, state, cfg.checkpoint.keep)

    # 4. the loop. Calls on the rollout group survive workers that die (they are replaced,
    # brought to the current policy, and the call runs again); a learner rank that dies is
    # replaced with its whole group, which goes back to the newest checkpoint (restart_learner).
    def evaluate_held_out(step: int) -> dict:
        due = cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.steps)
        return held_out_refusals(actors, eval_prompts, cfg.eval.max_new_tokens, version) if due else {}

    if cfg.eval.every and step == 1:  # the starting policy, as step 0
        logger.log(0, {"policy_version": version, **evaluate_held_out(0)})

    stream = RolloutStream(actors, sampler, cfg, version)
    # The last finished step (its step, prompt position and RNG states) and the last checkpointed
    # one: a step abandoned on a signal leaves the one before it to checkpoint.
    finished = (step - 1, sampler.position, capture_rng())
    saved_step, step_times = step - 1, []
    stop.arm()
    while step <= cfg.steps:
        times: dict[str, float] = {}
        try:
            with timed(times, "step"):
                # Until the learner trains, a signal may abandon the step (signals.py).
                with stop.abandonable(max(step_times[-3:]) if step_times else None):
                    with timed(times, "generate"):  # the learner waits for its batch
                        batch, pipeline = stream.next_batch(version)
                trained_version, train, sync = version, {"skipped": 1}, {}
                if batch is not None:
                    with timed(times, "train"):  # the workers go on generating as far as max_staleness allows
                        refs = actors.learner.start_train(batch)
                        stream.while_training(refs)
                        train = actors.learner.finish_train(refs)
                    with timed(times, "sync"):
                        stream.before_weight_update()  # the workers finish their chunks, or pause them
                        version += 1
                        sync = actors.rollout.sync(version)
                        stream.synced(version)
                if step == cfg.steps or stop.requested:
                    stream.close()
                stream.fill()  # the next step's generation starts before the evaluation and the checkpoint
                held_out = evaluate_held_out(step)
            finished = (step, stream.resume_position(), capture_rng())
            if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or step == cfg.steps or stop.requested:
                save(*finished)
                saved_step = step
        except KeyboardInterrupt:
            if not stop.abandoned:
                raise
            if finished[0] > saved_step:
                save(*finished)
            raise RunStopped(stop.requested, finished[0], run_dir, abandoned=step) from None
        except ActorFailedError as err:
            to = restart_learner(actors, cfg, err, learner_restarts)
            learner_restarts += 1
            stream.finish_generating()  # the workers' queues drain before the rewind's weight sync
            step = rewind(to, sync_workers=True)
            finished, saved_step = (step - 1, sampler.position, capture_rng()), step - 1
            stream.reset(version)
            continue

        rollout = step_metrics(batch, train, labels, prompt_tags) if batch is not None else train
        metrics = {"policy_version": version, **rollout,
                   **pipeline, **stream.step_stats(times["step"]),
                   "pipeline/learner_idle": times["generate"] / times["step"], **sync, **held_out,
                   "rollout/restarts": actors.rollout.restarts, "reward/restarts": actors.reward.restarts,
                   "learner/restarts": learner_restarts, **{f"time/{k}": v for k, v in times.items()}}
        logger.log(step, metrics)
        step_times.append(times["step"])
        if cfg.logging.log_rollouts and batch is not None:
            save_rollouts(run_dir, step, batch, cfg, trained_version)
        if step % cfg.logging.status_every == 0 or step == cfg.steps:
            print(status_line(step, cfg.steps, metrics, labels), flush=True)
        if stop.requested and step < cfg.steps:
            if saved_step < step:  # the signal came after this step's checkpoint decision
                save(*finished)
            raise RunStopped(stop.requested, step, run_dir)
        step += 1

    # 5. final policy
    final = checkpoint.final_dir(run_dir)
    actors.learner.call("save_pretrained", str(final))
    checkpoint.mark_final(run_dir, finished[0], version)
    print(f"final policy (version {version}) saved to {final}", flush=True)
    return final


def restart_learner(actors, cfg: RunConfig, err: ActorFailedError, restarts: int) -> checkpoint.DriverState | None:
    """After `err`: if a learner rank died, replace the learner group and re-form the
    weight-sync group; returns the checkpoint to go back to (None: the start), which the
    caller rewinds the run and the workers to. Anything else, or restarts used up, re-raises."""
    import ray

    if err.pending:  # calls of the failed fan-out: a rank blocked on the dead one fails within the timeout
        ray.wait(err.pending, num_returns=len(err.pending), timeout=cfg.weight_sync.timeout_s + 30)
    dead = actors.learner.dead()
    if not dead:
        raise err
    names = ", ".join(actors.learner.names[i] for i in dead)
    if restarts >= cfg.learner.max_restarts:
        raise ActorFailedError(f"{names} died and learner.max_restarts={cfg.learner.max_restarts} restarts are "
                               f"used up ({err})") from err
    to = checkpoint.read_latest(cfg.run_dir)
    log.warning("%s died (%s); starting a new learner group from %s (%d of %d restarts)", names, err,
                f"checkpoint {to.tag} (step {to.step})" if to else "the start", restarts + 1, cfg.learner.max_restarts)
    actors.replace_learner(cfg.cluster.actor_start_timeout_s)
    actors.rollout.connect(actors.learner, cfg.weight_sync, wire_dtype=cfg.model.dtype)
    return to


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
    except RunStopped as stopped:
        print(stopped, flush=True)
        return 128 + stopped.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
