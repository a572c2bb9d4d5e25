"""Learner worker: owns one DeepSpeed engine (one data-parallel rank) and applies GRPO
updates to scored rollout batches; rank 0 also owns the sending end of the weight sync.
Orchestration wraps it with `ray.remote`. The math lives in advantages / kl / losses."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from learner.advantages import group_advantages, overlong_penalty, trained_rows, weight_written_push_down
from learner.batching import TrainTensors, micro_batches, mini_batches, to_response_coords, to_tensors
from learner.engine import (
    adapter_weights,
    build_engine,
    full_parameters,
    hf_weights,
    load_policy,
    load_reference,
    save_hf_folder,
    torch_dtype,
)
from learner.kl import kl_estimate, kl_reward_penalty
from learner.logprobs import response_logprobs
from learner.losses import (LossSettings, PolicyLossInput, accumulate_metrics, loss_variant, policy_loss,
                            truncated_is_weights)
from mogrpo.batch import RolloutBatch
from mogrpo.config import RunConfig
from mogrpo.hardware import local_dtype
from mogrpo.rng import capture_rng, restore_rng
from mogrpo.weight_sync import SyncEndpoint, SyncGroup, WeightSender


@contextlib.contextmanager
def single_thread():
    """Pack buckets with one intra-op thread: on a small CPU the receiving engine and the
    transport's own threads need the other cores, and spinning OpenMP threads starve them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class PhaseClock:
    """Seconds per named phase of a step, summed over its uses (on CUDA, the device is
    synchronised at each edge so the time lands in the phase that queued the work)."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


class LearnerWorker:
    """One data-parallel rank of the learner: its `learner` section, plus the group size,
    response length and temperature of the rollouts it trains on, from the run config."""

    def __init__(self, model_path: str, run: RunConfig, *, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500):
        # DeepSpeed reads its rendezvous from the environment. Ray gives each actor its
        # own CUDA_VISIBLE_DEVICES, so the local rank is always 0.
        os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world_size),
                          MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        torch.manual_seed(run.seed)
        cfg = run.learner.model_copy(update={"dtype": local_dtype(run.learner.dtype)})
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.model_path = model_path
        self.group_size, self.max_new_tokens = run.rollout.group_size, run.rollout.max_new_tokens
        self.temperature = run.rollout.temperature
        policy = load_policy(model_path, cfg, run.model.trust_remote_code)
        self.reference = load_reference(model_path, cfg, run.model.trust_remote_code)
        total_optimizer_steps = run.steps * cfg.mini_batches * cfg.epochs
        self.engine, self.scheduler = build_engine(policy, cfg, world_size, total_optimizer_steps)
        if self.reference is not None:
            self.reference.to(self.engine.device)
        self.generator = torch.Generator().manual_seed(run.seed * 7919 + rank)
        self.sender: WeightSender | None = None
        self.wire_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ info
    def ready(self) -> dict:
        params = list(self.engine.module.parameters())
        return {
            "rank": self.rank,
            "device": str(self.engine.device),
            "dtype": self.cfg.dtype,
            "parameters": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params),
            "trainable": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params if p.requires_grad),
        }

    # ------------------------------------------------------------------ training
    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """One GRPO update on this rank's share of a scored rollout batch (whole groups).

        1. Pad the batch into tensors (written responses get the current policy's log-probs).
        2. Reference log-probs (no grad), if the KL coefficient is non-zero.
        3. Shape rewards (overlong penalty, KL in reward) and take group advantages.
        4. Old log-probs: the current policy's own (single pass, free), recomputed, or vLLM's.
        5. For each epoch and mini-batch: token-budget micro-batches, accumulate, step.
        6. Metrics.
        """
        cfg, loss_cfg = self.cfg, self.cfg.loss
        t0 = time.perf_counter()
        clock = PhaseClock(self.engine.device)
        # 1. tensors; a written response's "sampler" is taken to be the current policy
        data = to_tensors(batch).to(self.engine.device)
        if data.written.any():
            written = torch.nonzero(data.written).squeeze(1)
            part = data.rows(written)
            data.behaviour_logp[written, : part.mask.shape[1]] = self._logprobs_no_grad(part, reference=False) * part.mask
        # 2. reference
        with clock("ref"):
            ref_logp = (self._logprobs_no_grad(data, reference=True)
                        if loss_cfg.kl_coef > 0 else None)  # [B, T]
        # 3. rewards -> advantages
        rewards = data.rewards.clone()  # [B]
        if loss_cfg.overlong_buffer_tokens:
            rewards += overlong_penalty(data.response_len, self.max_new_tokens,
                                        loss_cfg.overlong_buffer_tokens, loss_cfg.overlong_penalty)
        if ref_logp is not None and loss_cfg.kl_in == "reward":
            penalty = kl_reward_penalty(data.behaviour_logp, ref_logp, data.mask, loss_cfg.kl_coef, loss_cfg.kl_estimator)
            rewards += penalty if loss_cfg.kl_on_written else torch.where(data.written, 0.0, penalty)
        scale = loss_variant(loss_cfg.variant).advantage_scale
        advantages = group_advantages(rewards, data.group_ids, self.group_size, scale, loss_cfg.advantage_eps)  # [B]
        mask = data.mask * (~data.truncated)[:, None] if loss_cfg.overlong_filter else data.mask  # [B, T]
        mean_logp = (data.behaviour_logp * data.mask).sum(1) / data.mask.sum(1).clamp(min=1)  # [B]
        trained = trained_rows(advantages, data.written, mean_logp, loss_cfg.written_push_down_min_logprob)  # [B]
        mask = mask * trained[:, None]
        advantages = weight_written_push_down(advantages, data.written, loss_cfg.written_push_down_weight)  # [B]
        # 4. old log-probs
        single_pass = cfg.mini_batches == 1 and cfg.epochs == 1
        if single_pass:
            old_logp = None  # the policy has not moved yet: old = current, detached
        elif loss_cfg.recompute_old_logprobs:
            old_logp = self._logprobs_no_grad(data, reference=False)
        else:
            old_logp = data.behaviour_logp
        t_prep = time.perf_counter() - t0
        # 5. updates
        kl_in_loss = ref_logp is not None and loss_cfg.kl_in == "loss"
        lengths = data.response_start + data.response_len  # [B]
        step_metrics, tokens, padded = [], 0, 0
        for _ in range(cfg.epochs):
            for rows in mini_batches(len(data), cfg.mini_batches, self.generator):
                settings = self._loss_settings(mask[rows])
                micro_metrics = []
                parts = micro_batches(rows, lengths, cfg.micro_batch_tokens)
                for k, micro in enumerate(parts):
                    part = data.rows(micro)
                    width = part.mask.shape[1]
                    self.engine.set_gradient_accumulation_boundary(k == len(parts) - 1)
                    with clock("forward"):
                        logp = self._logprobs(self.engine, part)  # [b, t]
                    old = logp.detach() if old_logp is None else old_logp[micro, :width]
                    inp = PolicyLossInput(
                        logp=logp,
                        old_logp=old,
                        advantages=advantages[micro],
                        mask=mask[micro, :width],
                        ref_logp=ref_logp[micro, :width] if kl_in_loss else None,
                        kl_rows=None if loss_cfg.kl_on_written else ~part.written,
                        is_weights=truncated_is_weights(old, part.behaviour_logp, loss_cfg.is_cap)
                        if loss_cfg.is_correction == "truncated" else None,
                    )
                    with clock("forward"):
                        loss, metrics = policy_loss(loss_cfg.variant, inp, settings)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"learner rank {self.rank}: non-finite loss {loss.item()} "
                                                 f"in a micro-batch of prompts {sorted(set(part.group_ids.tolist()))}")
                    # The loss is normalised already: no division by accumulation steps.
                    with clock("backward"):
                        self.engine.backward(loss, scale_wrt_gas=False)
                    metrics["logp_gap"] = (inp.old_logp - part.behaviour_logp).abs().mul(inp.mask).sum() / settings.total_tokens
                    micro_metrics.append(metrics)
                    tokens += int(part.attention_mask.sum())
                    padded += part.attention_mask.numel()
                with clock("optimizer"):
                    self.engine.step()
                step_metrics.append({**accumulate_metrics(micro_metrics), "grad_norm": float(self.engine.get_global_grad_norm() or 0.0)})
        # 6. metrics (means over mini-batches)
        elapsed = time.perf_counter() - t0
        out = {k: sum(m[k] for m in step_metrics) / len(step_metrics) for k in step_metrics[0]}
        out.update({
            "lr": float(self.scheduler.get_last_lr()[0]),
            "advantage/abs_mean": float(advantages.abs().mean()),
            "written/trained_below": float((data.written & trained & (advantages <= 0)).sum()),
            "learner/tokens_per_s": tokens / elapsed,
            "time/learner_prep": t_prep,
            **{f"time/learner_{name}": seconds for name, seconds in clock.seconds.items()},
            "tokens/prompt": int(data.response_start.sum()),
            "tokens/response": int(data.response_len.sum()),
            "tokens/trained_padded": padded,  # micro-batch rows x width, summed: what forward + backward computed
        })
        if ref_logp is not None and loss_cfg.kl_in == "reward":
            out["kl"] = float((kl_estimate(data.behaviour_logp, ref_logp, loss_cfg.kl_estimator) * data.mask).sum() / data.mask.sum())
        return out

    def _loss_settings(self, mask: torch.Tensor) -> LossSettings:
        """Denominators of a mini-batch: global counts over data-parallel ranks, divided by
        the world size because DeepSpeed averages the ranks' gradients."""
        totals = torch.stack([(mask.sum(1) > 0).sum(), mask.sum()]).to(torch.float64)  # on the device, for NCCL
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(totals)
        loss_cfg = self.cfg.loss
        return LossSettings(
            clip_eps_low=loss_cfg.clip_eps_low,
            clip_eps_high=loss_cfg.clip_eps_high,
            kl_coef=loss_cfg.kl_coef if loss_cfg.kl_in == "loss" else 0.0,
            kl_estimator=loss_cfg.kl_estimator,
            dr_grpo_constant=loss_cfg.dr_grpo_constant or self.max_new_tokens,
            total_sequences=max(1.0, float(totals[0])) / self.world_size,
            total_tokens=max(1.0, float(totals[1])) / self.world_size,
        )

    def _logprobs(self, model, part: TrainTensors) -> torch.Tensor:
        per_position = response_logprobs(
            model, part.input_ids, part.attention_mask, part.response_start, self.temperature
        )  # [b, L-1]
        return to_response_coords(per_position, part.response_start, part.mask.shape[1])  # [b, t]

    def logprobs(self, batch: RolloutBatch, reference: bool = False) -> list[list[float]]:
        """Log-prob of every response token under the current (or reference) policy."""
        data = to_tensors(batch).to(self.engine.device)
        values = self._logprobs_no_grad(data, reference).cpu()
        return [row[:n].tolist() for row, n in zip(values, data.response_len.tolist())]

    @torch.no_grad()
    def _logprobs_no_grad(self, data: TrainTensors, reference: bool) -> torch.Tensor:
        """[B, T] log-probs of all rows under the reference (or current) policy, in micro-batches."""
        out = torch.zeros_like(data.mask)
        lengths = data.response_start + data.response_len
        for micro in micro_batches(torch.arange(len(data), device=lengths.device), lengths, self.cfg.micro_batch_tokens):
            part = data.rows(micro)
            if reference and self.reference is not None:
                logp = self._logprobs(self.reference, part)
            elif reference:  # LoRA: the base model is the policy with its adapters off
                with self.engine.module.disable_adapter():
                    logp = self._logprobs(self.engine.module, part)
            else:
                logp = self._logprobs(self.engine.module, part)
            out[micro, : logp.shape[1]] = logp.float()
        return out

    # ------------------------------------------------------------------ weight sync
    def sync_rendezvous(self) -> tuple[str, int]:
        """An address and free port on this node for the sync group's store."""
        from mogrpo.runtime import free_port, node_ip

        return node_ip(), free_port()

    def init_weight_sync(self, endpoint: SyncEndpoint, bucket_bytes: int, verify_checksum: bool, wire_dtype: str) -> None:
        """Rank 0 opens the sending end (blocks until every rollout worker has joined),
        leaving any group it was in before (the group is re-formed when a worker is replaced)."""
        self.wire_dtype = torch_dtype(local_dtype(wire_dtype))
        if self.sender is not None:
            self.sender.group.close()
            self.sender = None
        if self.rank == 0:
            self.sender = WeightSender(SyncGroup(endpoint, rank=0), bucket_bytes, verify_checksum)

    def send_weights(self, version: int) -> dict:
        """Send the current policy as `version` (whole weights, or only the LoRA adapters
        with `lora.sync: adapter`). Called on every rank (ZeRO-3 gathers are collective);
        rank 0 sends once all parameters are gathered."""
        with full_parameters(self.engine.module, self.cfg.zero_stage), single_thread():
            if self.rank != 0:
                return {}
            if self.sender is None:
                raise RuntimeError("send_weights before init_weight_sync")
            module = self.engine.module
            weights = adapter_weights(module) if self.cfg.lora.syncs_adapters else hf_weights(module)
            stats = self.sender.send(version, weights, dtype=self.wire_dtype)
        return {"weight_sync/bytes": stats.bytes, "weight_sync/buckets": stats.buckets,
                "weight_sync/view_buckets": stats.view_buckets,
                "weight_sync/seconds": stats.seconds, "weight_sync/wait_seconds": stats.wait_seconds}

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str) -> str | None:
        """Write the policy (LoRA merged) as a Hugging Face folder; rank 0 writes."""
        with full_parameters(self.engine.module, self.cfg.zero_stage):
            if self.rank != 0:
                return None
            module = self.engine.module
            config = module.get_base_model().config if hasattr(module, "get_base_model") else module.config
            return str(save_hf_folder(hf_weights(module), config, self.model_path, Path(path)))

    def save_checkpoint(self, directory: str, tag: str) -> None:
        """Model, optimizer and scheduler state and this rank's RNG states, for resuming
        (DeepSpeed's format)."""
        self.engine.save_checkpoint(directory, tag=tag,
                                    client_state={"generator": self.generator.get_state(), "rng": capture_rng()})

    def load_checkpoint(self, directory: str, tag: str) -> None:
        _, client = self.engine.load_checkpoint(directory, tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        if client is None:
            raise FileNotFoundError(f"no learner checkpoint {tag!r} in {directory}")
        self.generator.set_state(client["generator"])
        restore_rng(client.get("rng", {}))
