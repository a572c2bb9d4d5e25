"""The root of the config tree for a GRPO run."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from mogrpo.config.base import Section
from mogrpo.config.learner import LearnerConfig
from mogrpo.config.reward import RewardConfig
from mogrpo.config.sections import (
    CheckpointConfig,
    ClusterConfig,
    DataConfig,
    InTrainingEvalConfig,
    LoggingConfig,
    PolicyModelConfig,
    PromptSource,
    RolloutConfig,
    TimeoutsConfig,
    WeightSyncConfig,
)

SMOKE_PROMPTS = str(Path(__file__).resolve().parents[2] / "cluster_configs" / "prompts" / "smoke_prompts.jsonl")


class RunConfig(Section):
    run_name: str = Field("mogrpo", pattern=r"^[A-Za-z0-9._-]+$")
    """Name of the run; outputs go to `<output_dir>/<run_name>/`."""
    output_dir: str = "runs"
    """Parent folder of run folders."""
    seed: int = 0
    """Seeds prompt order, sampling and initialisation."""
    steps: int = Field(3, ge=1)
    """GRPO steps (rollout batch → reward → update → weight sync)."""
    model: PolicyModelConfig = PolicyModelConfig()
    data: DataConfig = DataConfig(sources=[PromptSource(path=SMOKE_PROMPTS, fallback=True)])
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    learner: LearnerConfig = LearnerConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
    cluster: ClusterConfig = ClusterConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: InTrainingEvalConfig = InTrainingEvalConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "async_rollout" in data:
            raise ValueError("async_rollout was replaced by rollout.max_staleness (async_rollout: true is "
                             "rollout.max_staleness: 1)")
        return data

    @model_validator(mode="after")
    def _check_sizes(self):
        if self.rollout.partial_rollout and self.rollout.max_staleness < 1:
            raise ValueError("rollout.partial_rollout: true needs rollout.max_staleness >= 1 (at 0 nothing is "
                             "generating when the weights change)")
        if self.rollout.partial_rollout and self.learner.lora.syncs_adapters:
            raise ValueError("rollout.partial_rollout: true needs whole-weight sync; with learner.lora.sync: adapter "
                             "vLLM binds each request to one adapter for its whole length (use learner.lora.sync: merged)")
        if self.rollout.prompts_per_step < self.rollout.num_workers:
            raise ValueError(
                f"rollout.prompts_per_step ({self.rollout.prompts_per_step}) must be at least "
                f"rollout.num_workers ({self.rollout.num_workers}): every worker needs a prompt"
            )
        if self.rollout.prompts_per_step % self.learner.num_workers:
            raise ValueError(
                f"rollout.prompts_per_step ({self.rollout.prompts_per_step}) must be divisible by "
                f"learner.num_workers ({self.learner.num_workers}) so each rank gets whole groups"
            )
        if self.eval.every and self.data.max_prompt_tokens + self.eval.max_new_tokens > self.model.max_model_len:
            raise ValueError(
                f"data.max_prompt_tokens ({self.data.max_prompt_tokens}) + eval.max_new_tokens "
                f"({self.eval.max_new_tokens}) exceeds model.max_model_len ({self.model.max_model_len})"
            )
        if self.data.max_prompt_tokens + self.rollout.max_new_tokens > self.model.max_model_len:
            raise ValueError(
                f"data.max_prompt_tokens ({self.data.max_prompt_tokens}) + rollout.max_new_tokens "
                f"({self.rollout.max_new_tokens}) exceeds model.max_model_len ({self.model.max_model_len})"
            )
        return self
