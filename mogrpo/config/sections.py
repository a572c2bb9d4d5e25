"""Config sections for the policy model, prompts, rollout, weight sync, cluster and logging."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mogrpo.config.base import Section
from mogrpo.refusal import WRITTEN_REFUSALS

DType = Literal["auto", "bfloat16", "float32", "float16"]


class PolicyModelConfig(Section):
    path: str = "smollm2-135m-instruct"
    """Local folder, Hugging Face id, or built-in name (smollm2-135m-instruct, tiny-llama)."""
    dtype: DType = "auto"
    """Weights dtype of the vLLM engines and on the wire of the weight sync. `auto`: bf16 on
    GPUs and on CPUs with native bf16 (AVX512-BF16, AMX), float32 on other CPUs, where
    bf16 is emulated and several times slower (mogrpo/hardware.py)."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model. Off unless you trust the model's source."""
    max_model_len: int = Field(1024, ge=64)
    """Context length (prompt + response tokens) the engines reserve."""


class PromptSource(Section):
    path: str
    """A parquet / jsonl / json / csv file, or a Hugging Face data set name."""
    prompt_field: str = "prompt"
    """Column holding the user message (a string) or a list of chat messages."""
    split: str = "train"
    """Split, for Hugging Face data sets."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many rows of this source (after shuffling with the run seed)."""
    required: bool = True
    """If false, a missing file is reported and skipped instead of failing the run."""
    fallback: bool = False
    """Used only when no non-fallback source could be read (e.g. shared data absent)."""
    where: dict[str, list[str]] = {}
    """Keep only rows whose column's value (as text) is one of these, e.g. `{request: [benign]}`."""
    tag: str = ""
    """A name for this source's kind of request (e.g. `harmful`, `benign`): the run logs the refusal rate of
    each tag's rollouts (`rollout/refusal_rate/<tag>`)."""


class DataConfig(Section):
    sources: list[PromptSource] = Field(min_length=1)
    """Where prompts come from; rows of all readable sources are mixed."""
    system_prompt: str | None = None
    """A system message put before every prompt, if set."""
    max_prompt_tokens: int = Field(256, ge=8)
    """Prompts longer than this (after the chat template) are counted, reported and skipped."""
    shuffle: bool = True
    """Shuffle prompts with the run seed."""
    stratify_tags: bool = False
    """Spread each source tag's prompts evenly through every epoch, so every step's prompts hold
    the tags (e.g. harmful and benign) in about their overall proportions; a plain shuffle can
    bunch one tag into a run of steps, and a small step then trains on one side only."""


class RolloutConfig(Section):
    num_workers: int = Field(1, ge=1)
    """Number of vLLM rollout actors; prompts are split between them."""
    prompts_per_step: int = Field(8, ge=1)
    """Prompts per GRPO step; each yields `group_size` responses."""
    group_size: int = Field(4, ge=2)
    """Responses sampled per prompt (N in GRPO); advantages are normalised within a group."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest response, in tokens."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (the learner divides its logits by the same value)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = Field(-1, ge=-1)
    """Top-k sampling; -1 disables it."""
    num_cpus: float = Field(1, gt=0)
    """Ray CPUs each rollout actor reserves."""
    num_gpus: float = Field(0, ge=0)
    """Ray GPUs each rollout actor reserves (fractional shares a GPU with the learner)."""
    resources: dict[str, float] = {}
    """Custom Ray resources each rollout actor reserves besides CPUs and GPUs, e.g. `{mogrpo_rollout: 1}`: only
    nodes that advertise them (`ray start --resources`) can host it, which pins the role to those nodes."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM tensor parallelism inside one rollout actor."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """Share of GPU memory vLLM may take (GPU only)."""
    cpu_kv_cache_gib: float | Literal["auto"] = "auto"
    """KV cache of each worker on CPU, in GiB. `auto`: what the sequences one worker generates at once need
    (one generate call, or max_chunks_per_worker of them with partial_rollout: rollout.chunk_groups groups
    each, each sequence up to data.max_prompt_tokens + rollout.max_new_tokens), plus a quarter, and at least
    one max_model_len sequence; a bigger evaluation batch then runs in turns. (SmolLM2, 32 sequences of 256 tokens: 0.23 GiB, where vLLM's smallest setting by its
    environment variable is 1 GiB.)"""
    enforce_eager: bool = True
    """Skip CUDA-graph capture (faster start, slower decode on GPU)."""
    enable_prefix_caching: bool = True
    """Share KV of identical prompt prefixes (the group's N samples share the prompt)."""
    omp_threads: int = Field(1, ge=1)
    """Intra-op threads of each rollout actor on CPU."""
    env_vars: dict[str, str] = {}
    """Extra environment variables of each rollout actor process, over mogrpo's own (e.g. NCCL or allocator settings)."""
    max_restarts: int = Field(2, ge=0)
    """Rollout workers that die are replaced, re-joined to the weight-sync group and brought
    to the current policy, at most this many times in a run (0: a dead worker ends the run)."""
    written_refusals: int = Field(0, ge=0)
    """Refusal exploration: in every group, this many of the `group_size` responses are a
    written refusal (from `written_refusal_texts`, in turn) instead of a sample. The reward
    decides what it is worth: above the samples for a harmful request, below a helpful
    answer for a benign one. The learner trains on it only where the reward prefers it to the
    group's samples (positive advantage), like a sample whose sampler was the current policy.
    For a policy that almost never samples a refusal, GRPO otherwise has nothing to prefer.
    0 turns it off."""
    written_refusal_texts: list[str] = Field(default_factory=lambda: list(WRITTEN_REFUSALS), min_length=1)
    """Refusals that `written_refusals` puts into groups."""
    max_staleness: int = Field(0, ge=0)
    """How many policy versions a trained sample may lag the policy it trains: 0 is synchronous (generate, score,
    train, sync); k lets the workers go on generating, for up to k steps ahead, while the learner trains. A group
    older than k versions when its batch is taken is dropped (and counted)."""
    chunk_groups: int = Field(0, ge=0)
    """Groups (prompts) per generate call: the unit that goes to the worker with the least outstanding work and on
    to scoring as soon as it is done. 0: prompts_per_step / num_workers, rounded up (one call per worker a step)."""
    max_chunks_per_worker: int = Field(2, ge=1)
    """Generate calls queued on one worker at once (2: the next is there when one finishes)."""
    partial_rollout: bool = False
    """In-flight weight updates (needs max_staleness >= 1 and whole-weight sync): a new policy version reaches a
    worker while it generates. Its requests pause between two engine steps, the weights load, every running
    request's KV cache is dropped and recomputed with the new weights, and generation resumes; the worker's
    chunks run in one engine (continuous batching). A response records the version it started with
    (`policy_version`) and the one that finished it (`policy_version_last`); the learner's importance weights use
    the log-probs each token was sampled with. Off: a worker finishes its chunks before an update, so no
    response mixes two versions."""

    @model_validator(mode="after")
    def _some_sampled(self):
        if self.written_refusals >= self.group_size:
            raise ValueError(f"rollout.written_refusals: {self.written_refusals} leaves no sampled response in a "
                             f"group of rollout.group_size={self.group_size}; expected at most {self.group_size - 1}")
        if any(not t.strip() for t in self.written_refusal_texts):
            raise ValueError("rollout.written_refusal_texts: holds an empty text")
        if self.cpu_kv_cache_gib != "auto" and not self.cpu_kv_cache_gib > 0:
            raise ValueError(f"rollout.cpu_kv_cache_gib: {self.cpu_kv_cache_gib}; expected a positive size in GiB "
                             "or 'auto'")
        return self


class WeightSyncConfig(Section):
    transport: Literal["gloo", "nccl"] = "gloo"
    """Collective backend between the learner and the vLLM workers (nccl needs a GPU on each end)."""
    bucket_mb: float = Field(64, gt=0)
    """Parameters are packed into contiguous buffers of about this size; one collective each."""
    timeout_s: float = Field(120, gt=0)
    """A peer that does not answer within this many seconds fails the sync with its name."""
    master_addr: str | None = None
    """Address the learner listens on for the sync group; default: the learner node's IP."""
    master_port: int = Field(0, ge=0, le=65535)
    """Port for the sync group's rendezvous; 0 picks a free one."""
    verify_checksum: bool = False
    """Debug: compare a checksum of every parameter on both ends after each sync."""


class ClusterConfig(Section):
    ray_address: str | None = None
    """Ray cluster to join ("auto" under `ray job submit`); None starts a private local instance."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of the private local instance (default: all of this machine's)."""
    num_gpus: int | None = Field(None, ge=0)
    """GPUs of the private local instance (default: detected)."""
    include_dashboard: bool = False
    """Start Ray's dashboard with the private local instance."""
    dashboard_host: str = "127.0.0.1"
    """Where the dashboard listens; keep it on localhost unless you mean to expose it."""
    object_store_memory_gib: float | None = Field(None, gt=0)
    """Object store size of the private local instance."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How the run's placement group spreads actors over nodes."""
    actor_start_timeout_s: float = Field(900, gt=0)
    """An actor that is not ready after this long fails the run with its name."""
    check_resources: bool = True
    """Before starting actors, check that the cluster's live nodes can hold them and name what is missing
    (false for an autoscaling cluster whose nodes appear only on demand)."""


class WandbConfig(Section):
    enabled: bool = False
    """Log every step's metrics to Weights & Biases too (needs `pip install wandb`)."""
    mode: Literal["offline", "online"] = "offline"
    """offline: files in `<run>/wandb/` only, no network (upload later with `wandb sync`); online: needs a login."""
    project: str = "mogrpo"
    entity: str | None = None
    tags: list[str] = []


class MlflowConfig(Section):
    enabled: bool = False
    """Log the config as parameters and every step's metrics to MLflow too (needs `pip install mlflow-skinny`)."""
    tracking_uri: str | None = None
    """A tracking server (http://host:5000) or a folder; default: $MLFLOW_TRACKING_URI, else `<run>/mlruns`."""
    experiment: str = "mogrpo"


class TimeoutsConfig(Section):
    """How long the driver waits for each kind of actor call; a call that takes longer fails the run with the
    actor's name and the call (a stuck actor is an error, never a silent hang)."""

    generate_s: float = Field(1800, gt=0)
    """One generate call of a rollout worker (a chunk of groups, or the in-training evaluation)."""
    score_s: float = Field(600, gt=0)
    """One scoring call of a reward replica."""
    train_s: float = Field(3600, gt=0)
    """One training step of the learner ranks."""
    sync_s: float = Field(900, gt=0)
    """One weight sync (both ends), and setting up the weight-sync group."""
    save_s: float = Field(1800, gt=0)
    """Writing a checkpoint, the final policy, or loading a checkpoint."""


class LoggingConfig(Section):
    tensorboard: bool = True
    """Write TensorBoard event files into the run folder."""
    wandb: WandbConfig = WandbConfig()
    mlflow: MlflowConfig = MlflowConfig()
    log_rollouts: bool = True
    """Keep every response with its per-label scores in rollouts/step-*.parquet."""
    status_every: int = Field(1, ge=1)
    """Print a one-line status every this many steps."""


class InTrainingEvalConfig(Section):
    every: int = Field(0, ge=0)
    """Every this many steps (and after the last), answer `sources` greedily with the rollout workers' current
    weights and log each tag's refusal rate as `eval/<tag>_refusal` (0: off)."""
    sources: list[PromptSource] = []
    """Held-out prompts, each source with a `tag` (e.g. harmful, benign); prompts that are also in
    `data.sources` are dropped from it (and counted in the log)."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest answer, in tokens."""

    @model_validator(mode="after")
    def _tagged(self):
        if self.every and not self.sources:
            raise ValueError("eval.every is set but eval.sources is empty")
        untagged = [s.path for s in self.sources if not s.tag]
        if untagged:
            raise ValueError(f"eval.sources: {untagged[0]} has no tag (its refusal rate is logged as eval/<tag>_refusal)")
        return self


class CheckpointConfig(Section):
    every: int = Field(20, ge=0)
    """Save a resumable checkpoint every this many steps (0: none between); the last step, and the step a
    SIGTERM or Ctrl-C interrupts, are checkpointed either way."""
    resume: bool = True
    """Resume from the newest complete checkpoint in the run folder if there is one."""
    keep: int = Field(2, ge=1)
    """How many recent checkpoints to keep."""
    save_hf: bool = False
    """Also write each checkpoint's policy as a Hugging Face folder (`checkpoints/<tag>/hf`)."""
    stop_grace_s: float = Field(20, ge=0)
    """On SIGTERM or Ctrl-C the current step finishes and is checkpointed, unless it is still generating or
    scoring and expected (from the last steps' times) to need more than this many seconds: then it is abandoned
    at once and the step before it checkpointed. Set it to the cluster's grace period less a checkpoint's
    write time (Kubernetes gives 30 s by default)."""

