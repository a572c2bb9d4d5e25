"""Config of the reward service used during a GRPO run: which model, how labels combine, how
the actor batches. Training the reward model is configured in `reward_training.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mogrpo.config.base import Section

DEFAULT_LABELS = ("safety", "actionability", "meaningfulness", "politeness", "harmful_request", "refusal")
"""The paper's four alignment axes, plus two labels the safety gate combines by a rule: whether the request
should be refused, and whether the answer refuses (mogrpo/reward_aggregate.py)."""


class AggregationConfig(Section):
    mode: Literal["weighted_sum", "group_normalized", "safety_gate"] = "safety_gate"
    """How per-label scores combine into one reward (see mogrpo/reward_aggregate.py). The default gate lets
    helpfulness count only for an answer the safety label passes; the other modes trade safety for helpfulness."""
    weights: dict[str, float] = {"safety": 1.0, "actionability": 1.0, "meaningfulness": 1.0, "politeness": 0.5}
    """Weight of each label; every key must be a label of the reward model."""
    safety_label: str = "safety"
    """The label the safety gate reads."""
    request_label: str = "harmful_request"
    """safety_gate: with `refusal_label`, where the reward model has both labels the gate reads
    min(safety, 1 - harmful_request * (1 - refusal)): an answer that does not refuse a request that should
    be refused is unsafe, whatever the safety label says. Models without them gate on safety alone."""
    refusal_label: str = "refusal"
    """safety_gate: the label saying the answer refuses (see `request_label`)."""
    safety_threshold: float = Field(0.5, ge=0, le=1)
    """safety_gate: below this safety score the other labels do not count and `gate_penalty` takes their place."""
    gate_penalty: float = Field(-1.0, le=0)
    """safety_gate: what a response judged unsafe gets instead of the other labels' weighted sum (<= 0, so no
    unsafe response outscores a safe one)."""
    length_penalty: float = Field(0.0, ge=0)
    """Rule term: subtract this times max(0, response_tokens - length_target) / length_target."""
    length_target: int = Field(256, ge=1)
    """Rule term: responses up to this many tokens are not penalised."""
    empty_response_score: float = Field(0.0, ge=0, le=1)
    """Every label's score of an empty or whitespace-only response (the encoder is not run on it)."""


class RewardConfig(Section):
    model: str = "runs/reward-model"
    """Folder of a trained multi-label reward model (see `make reward`)."""
    fit_if_missing: bool = True
    """If `model` does not exist, fit one with the short built-in routine and save it there."""
    aggregation: AggregationConfig = AggregationConfig()
    """Combining labels into one scalar; changeable without retraining."""
    num_replicas: int = Field(1, ge=1)
    """Reward actors; each finished chunk of groups goes to the one with the fewest calls outstanding."""
    max_restarts: int = Field(2, ge=0)
    """A reward replica that dies is replaced (it holds no state) and its calls sent again, at most this many
    times in a run (0: a dead replica ends the run)."""
    num_cpus: float = Field(1, ge=0)
    """Ray CPUs each reward actor reserves."""
    num_gpus: float = Field(0, ge=0)
    """Ray GPUs each reward actor reserves."""
    resources: dict[str, float] = {}
    """Custom Ray resources each reward actor reserves besides CPUs and GPUs, e.g. `{mogrpo_reward: 1}`: only
    nodes that advertise them (`ray start --resources`) can host it, which pins the role to those nodes."""
    omp_threads: int = Field(1, ge=1)
    """Intra-op threads of each reward actor on CPU."""
    env_vars: dict[str, str] = {}
    """Extra environment variables of each reward actor process, over mogrpo's own (e.g. NCCL or allocator settings)."""
    max_batch_size: int = Field(64, ge=1)
    """Most (prompt, response) pairs scored in one encoder forward."""
    max_wait_ms: float = Field(5.0, ge=0)
    """How long the actor waits to fill a batch from concurrent requests."""
