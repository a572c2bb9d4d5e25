"""The multi-label reward model: an encoder reads prompt and response together as one
pair, `[CLS] prompt [SEP] response [SEP]`; pooled views of some of its hidden layers (by
default the prompt's mean, the response's mean, the mean of the response's first tokens,
where a refusal shows, and the response's max, of layers 3 and 6) feed one small head
per label; a sigmoid puts each score in [0, 1]. Optionally a request encoder (a small chat
LM reading the request alone, `mogrpo/request_encoder.py`) adds features that the request
labels' heads read beside the pair's.

Saved folder (written atomically: a temp folder beside it, then a rename):
    config.json, model.safetensors, tokenizer files   the encoder (a plain HF folder)
    heads.safetensors                                  one head per label
    reward_model.json                                  labels, pooling, max length
    training_config.yaml, metrics.json                 how it was trained, held-out numbers
    request_encoder/                                   the request encoder, when the spec has one
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mogrpo.atomic import write_folder_atomically
from mogrpo.errors import MissingFileError, UserError
from mogrpo.request_encoder import (FOLDER as REQUEST_FOLDER, ProbeHead, RequestEncoder, RequestEncoderSpec, RequestHead,
                                    build_request_encoder, load_request_encoder)

log = logging.getLogger(__name__)

FORMAT = "mogrpo-reward-model/1"
SPEC_FILE = "reward_model.json"
HEADS_FILE = "heads.safetensors"
METRICS_FILE = "metrics.json"
TRAIN_CONFIG_FILE = "training_config.yaml"
NUM_SPECIAL = 3  # [CLS] prompt [SEP] response [SEP]


class RewardModelError(UserError, ValueError):
    """A reward-model folder or a scoring request is malformed."""


@dataclass
class ModelSpec:
    """What, besides weights, defines a reward model (saved as reward_model.json)."""

    labels: list[str]
    max_length: int = 256  # tokens of the pair, special tokens included
    response_head_tokens: int = 32  # the response's first tokens pooled on their own
    head_hidden: int = 256
    head_dropout: float = 0.3  # active in training only
    layers: list[int] = field(default_factory=lambda: [3, 6])  # hidden states pooled (0 = embeddings)
    pooling: list[str] = field(default_factory=lambda: ["prompt_mean", "response_mean", "head_mean", "response_max"])
    encoder_source: str = ""  # the reference the encoder came from (informational)
    request_encoder: RequestEncoderSpec | None = None  # an LM reading the request alone, for some labels
    format: str = FORMAT

    def __post_init__(self):
        if isinstance(self.request_encoder, dict):
            self.request_encoder = RequestEncoderSpec(**self.request_encoder)
        if self.request_encoder is not None:
            unknown = [label for label in [*self.request_encoder.labels, self.request_encoder.probe_label]
                       if label is not None and label not in self.labels]
            if unknown:
                raise RewardModelError(f"request_encoder.labels {unknown} are not labels of the model ({self.labels})")

    @property
    def probe_label(self) -> str | None:
        """The label whose head is the request encoder's fine-tuning probe (a ProbeHead), if any."""
        return self.request_encoder.probe_label if self.request_encoder is not None else None

    @property
    def request_labels(self) -> list[str]:
        """Labels with a RequestHead (pair and standardised request features); the probe's is not one."""
        if self.request_encoder is None:
            return []
        return [label for label in self.request_encoder.labels if label != self.probe_label]

    def feature_dim(self, hidden_size: int) -> int:
        return len(self.pooling) * hidden_size * len(self.layers)


def truncate_pair(n_prompt: int, n_response: int, budget: int) -> tuple[int, int]:
    """How many prompt tokens (kept from its END) and response tokens (kept from its START)
    fit in `budget`. Whole pairs that fit are kept; otherwise the prompt keeps at least
    half the budget when it needs it, and the response gets the rest."""
    if n_prompt + n_response <= budget:
        return n_prompt, n_response
    keep_prompt = min(n_prompt, max(budget // 2, budget - n_response))
    return keep_prompt, min(n_response, budget - keep_prompt)


@dataclass
class EncodedPairs:
    ids: list[list[int]]  # per pair: [CLS] p [SEP] r [SEP]
    n_prompt: list[int]  # prompt tokens kept (the response starts at n_prompt + 2)
    truncated: int  # pairs that lost tokens


def encode_pairs(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int) -> EncodedPairs:
    """Tokenise pairs with the truncation rule of `truncate_pair`."""
    budget = max_length - NUM_SPECIAL
    p_ids = tokenizer(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False, verbose=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, n_prompt, truncated = [], [], 0
    for p, r in zip(p_ids, r_ids):
        kp, kr = truncate_pair(len(p), len(r), budget)
        truncated += (kp, kr) != (len(p), len(r))
        p = p[len(p) - kp:]
        ids.append([cls, *p, sep, *r[:kr], sep])
        n_prompt.append(kp)
    return EncodedPairs(ids, n_prompt, truncated)


def collate(ids: list[list[int]], n_prompt: list[int], pad_id: int, head_tokens: int) -> dict[str, torch.Tensor]:
    """Pad a batch and build the pooling masks."""
    B, L = len(ids), max(len(x) for x in ids)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)  # [B, L]
    attention = torch.zeros((B, L), dtype=torch.long)  # [B, L]
    token_type = torch.zeros((B, L), dtype=torch.long)  # [B, L]: 1 on the response segment
    prompt_mask = torch.zeros((B, L))  # [B, L]: prompt tokens only (no [CLS]/[SEP])
    response_mask = torch.zeros((B, L))  # [B, L]: response tokens only
    head_mask = torch.zeros((B, L))  # [B, L]: the response's first `head_tokens`
    for b, (x, kp) in enumerate(zip(ids, n_prompt)):
        n = len(x)
        input_ids[b, :n] = torch.tensor(x)
        attention[b, :n] = 1
        start, end = kp + 2, n - 1  # response tokens sit between the first and last [SEP]
        token_type[b, kp + 2:n] = 1
        prompt_mask[b, 1:kp + 1] = 1
        response_mask[b, start:end] = 1
        head_mask[b, start:min(end, start + head_tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": token_type,
            "prompt_mask": prompt_mask, "response_mask": response_mask, "head_mask": head_mask}


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, H], mask [B, L] -> [B, H]; an empty mask gives zeros."""
    total = (hidden * mask.unsqueeze(-1)).sum(1)  # [B, H]
    return total / mask.sum(1, keepdim=True).clamp(min=1.0)  # [B, H]


def masked_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, H], mask [B, L] -> [B, H] elementwise max over the mask; empty -> zeros."""
    filled = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf"))  # [B, L, H]
    out = filled.max(1).values  # [B, H]
    return torch.where(mask.sum(1, keepdim=True) > 0, out, torch.zeros_like(out))


POOLERS = {
    "prompt_mean": lambda h, b: masked_mean(h, b["prompt_mask"]),
    "response_mean": lambda h, b: masked_mean(h, b["response_mask"]),
    "head_mean": lambda h, b: masked_mean(h, b["head_mask"]),
    "response_max": lambda h, b: masked_max(h, b["response_mask"]),
    "cls": lambda h, b: h[:, 0],
}
"""Pooled views of one layer's hidden states h [B, L, H] -> [B, H], by name (ModelSpec.pooling)."""


class Head(nn.Module):
    """One label's regressor: features [B, F] -> logit [B]."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)  # [B]


class RewardModel(nn.Module):
    """Encoder + pooling (+ request encoder) + one head per label; `score` is the public
    scoring path. Features are [pair features F | request features R]; the request labels'
    heads read both parts, the others the pair part."""

    def __init__(self, encoder: nn.Module, tokenizer, spec: ModelSpec, request_encoder: RequestEncoder | None = None):
        super().__init__()
        if (request_encoder is None) != (spec.request_encoder is None):
            raise RewardModelError("a request encoder is given exactly when the spec names one")
        self.encoder, self.tokenizer, self.spec, self.request_encoder = encoder, tokenizer, spec, request_encoder
        self.pair_dim = dim = spec.feature_dim(encoder.config.hidden_size)
        request_dim = request_encoder.dim if request_encoder is not None else 0
        self.heads = nn.ModuleDict({label: self._head(label, dim, request_dim) for label in spec.labels})
        self.pairs_seen = 0
        self.pairs_truncated = 0

    def _head(self, label: str, pair_dim: int, request_dim: int) -> nn.Module:
        spec = self.spec
        if label == spec.probe_label:
            return ProbeHead(pair_dim + self.request_encoder.probe_columns())
        if label in spec.request_labels:
            return RequestHead(pair_dim, request_dim, spec.head_hidden, spec.head_dropout)
        return Head(pair_dim, spec.head_hidden, spec.head_dropout)

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    # ------------------------------------------------------------------ forward pieces
    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder + pooling: a collated batch -> features [B, F]."""
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], output_hidden_states=True)
        views = []
        for layer in self.spec.layers:
            h = out.hidden_states[layer].float()  # [B, L, H]
            views += [POOLERS[name](h, batch) for name in self.spec.pooling]
        return torch.cat(views, dim=-1)  # [B, len(pooling) * H * len(layers)]

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, F (+ R)] -> logits [B, K], columns in `labels` order."""
        pair = features[:, :self.pair_dim]
        request = {*self.spec.request_labels, self.spec.probe_label}
        return torch.stack([self.heads[label](features if label in request else pair) for label in self.spec.labels],
                           dim=-1)

    def request_features(self, prompts: Sequence[str], batch_size: int = 32,
                         progress: str | None = None) -> torch.Tensor:
        """[N, R] features of the requests alone ([N, 0] without a request encoder)."""
        if self.request_encoder is None:
            return torch.zeros((len(prompts), 0))
        return self.request_encoder.features(prompts, batch_size, progress)

    def set_request_stats(self, features: torch.Tensor) -> None:
        """Standardise the request heads' inputs with these training features [N, F + R]."""
        if not len(features):
            return
        for label in self.spec.request_labels:
            self.heads[label].set_request_stats(features)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64,
               progress: str | None = None) -> torch.Tensor:
        """Pair features [N, F] of N pairs (no request features), batched by length (longest
        first) to limit padding."""
        enc = encode_pairs(self.tokenizer, prompts, responses, self.spec.max_length)
        self.pairs_seen += len(enc.ids)
        self.pairs_truncated += enc.truncated
        order = sorted(range(len(enc.ids)), key=lambda i: -len(enc.ids[i]))
        dim = self.spec.feature_dim(self.encoder.config.hidden_size)
        out = torch.empty((len(order), dim))
        chunks = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc=progress, unit="batch", dynamic_ncols=True)
        for start in chunks:
            idx = order[start:start + batch_size]
            batch = collate([enc.ids[i] for i in idx], [enc.n_prompt[i] for i in idx],
                            self.tokenizer.pad_token_id, self.spec.response_head_tokens)
            device = next(self.encoder.parameters()).device
            out[idx] = self.features({k: v.to(device) for k, v in batch.items()}).float().cpu()
        if progress and enc.truncated:
            log.info("%s: %d of %d pairs longer than %d tokens were cut (prompt end and response start kept)",
                     progress, enc.truncated, len(enc.ids), self.spec.max_length)
        return out

    @torch.inference_mode()
    def scores_from_features(self, features: torch.Tensor) -> dict[str, np.ndarray]:
        device = next(self.heads.parameters()).device
        probs = torch.sigmoid(self.head_logits(features.to(device))).float().cpu().numpy()  # [N, K]
        return {label: probs[:, k].astype(np.float32) for k, label in enumerate(self.spec.labels)}

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64,
              empty_score: float = 0.0) -> dict[str, np.ndarray]:
        """Each label's score in [0, 1] for every (prompt, response): label -> [N] float32.
        An empty or whitespace-only response is not encoded; every label gets `empty_score`."""
        check_pairs(prompts, responses)
        n = len(responses)
        out = {label: np.full(n, empty_score, dtype=np.float32) for label in self.spec.labels}
        keep = [i for i, r in enumerate(responses) if r.strip()]
        if keep:
            kept_prompts = [prompts[i] for i in keep]
            feats = torch.cat([self.encode(kept_prompts, [responses[i] for i in keep], batch_size),
                               self.request_features(kept_prompts)], dim=-1)
            for label, values in self.scores_from_features(feats).items():
                out[label][keep] = values
        for label, values in out.items():
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                i = int(bad[0])
                raise RewardModelError(f"label {label!r} scored {float(values[i])} for sample {i} "
                                       f"(response {responses[i][:80]!r}); {bad.size} bad in all")
        return out

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path, train_config_yaml: str | None = None, metrics: dict | None = None) -> Path:
        """Write the model folder atomically (see the module docstring)."""

        def fill(tmp: Path) -> None:
            self.encoder.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            heads = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
            save_file(heads, str(tmp / HEADS_FILE), metadata={"format": FORMAT})
            (tmp / SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2))
            if self.request_encoder is not None:
                self.request_encoder.save(tmp / REQUEST_FOLDER)
            if train_config_yaml is not None:
                (tmp / TRAIN_CONFIG_FILE).write_text(train_config_yaml)
            if metrics is not None:
                (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))

        return write_folder_atomically(Path(path), fill)


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise RewardModelError(f"{len(prompts)} prompts but {len(responses)} responses")
    for name, seq in (("prompt", prompts), ("response", responses)):
        for i, x in enumerate(seq):
            if not isinstance(x, str):
                raise RewardModelError(f"{name} {i} is a {type(x).__name__}, expected str")


def build_reward_model(encoder_ref: str, spec: ModelSpec, seed: int = 0) -> RewardModel:
    """A fresh model: the encoder from `encoder_ref` (built-in, folder or hub id), new heads."""
    from transformers import AutoModel, AutoTokenizer

    from mogrpo.models import resolve_model

    folder = resolve_model(encoder_ref)
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    _check_tokenizer(tokenizer, folder)
    spec.encoder_source = spec.encoder_source or encoder_ref
    n = encoder.config.num_hidden_layers
    bad = [layer for layer in spec.layers if not -(n + 1) <= layer <= n]
    if bad:
        raise RewardModelError(f"model.layers {bad} out of range for {encoder_ref} ({n} layers: use 0..{n} or -1..-{n + 1})")
    unknown = [name for name in spec.pooling if name not in POOLERS]
    if unknown:
        raise RewardModelError(f"model.pooling {unknown} unknown (known: {list(POOLERS)})")
    request = build_request_encoder(spec.request_encoder) if spec.request_encoder is not None else None
    return RewardModel(encoder, tokenizer, spec, request)


def _check_tokenizer(tokenizer, folder) -> None:
    missing = [t for t in ("cls_token_id", "sep_token_id", "pad_token_id") if getattr(tokenizer, t) is None]
    if missing:
        raise RewardModelError(f"encoder tokenizer in {folder} lacks {missing}: a BERT-style pair encoder is needed")


def read_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    file = path / SPEC_FILE
    if not file.is_file():
        raise RewardModelError(f"{path} is not a reward model folder: {SPEC_FILE} is missing "
                               f"(train one with `make reward`)")
    data = json.loads(file.read_text())
    if data.get("format") != FORMAT:
        raise RewardModelError(f"{file}: format {data.get('format')!r}, expected {FORMAT!r}")
    return ModelSpec(**data)


def find_reward_model(path: str | Path, fit_if_missing: bool = False) -> Path | None:
    """`path` if it holds a reward model (its spec read: a damaged one fails clearly); None if
    nothing is there yet and `fit_if_missing` allows fitting one; else a MissingFileError
    saying what to do."""
    path = Path(path).expanduser()
    if (path / SPEC_FILE).is_file():
        read_spec(path)
        return path
    if path.exists() and any(path.iterdir()):
        raise MissingFileError(f"reward model folder {path} exists but holds no {SPEC_FILE}: not a reward model "
                               "(move it away, or point reward.model elsewhere)")
    if not fit_if_missing:
        raise MissingFileError(
            f"reward model {path} does not exist and reward.fit_if_missing is false: train it with `make reward` "
            f"(python -m reward_training.train --config cluster_configs/reward_default.yaml output={path})")
    return None


def read_training_config(path: str | Path):
    """The `RewardTrainConfig` a saved model was trained with (its `training_config.yaml`),
    which says what its training, validation and test splits hold."""
    from mogrpo.config import ConfigError
    from mogrpo.config.loader import load_yaml_section
    from mogrpo.config.reward_training import RewardTrainConfig

    file = Path(path) / TRAIN_CONFIG_FILE
    if not file.is_file():
        raise MissingFileError(f"reward model {path} has no {TRAIN_CONFIG_FILE}: what it was trained on is unknown "
                               "(train one with `make reward`)")
    try:
        return load_yaml_section(RewardTrainConfig, file)
    except ConfigError as err:
        raise ConfigError(f"reward model {path}: cannot read its training config: {err}") from err


def read_labels(path: str | Path) -> list[str]:
    """The labels of a saved model, without loading its weights."""
    return read_spec(path).labels


def default_device() -> str:
    """CUDA where this process sees a GPU (a Ray actor given num_gpus > 0), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_reward_model(path: str | Path, threads: int | None = None, device: str | None = None) -> RewardModel:
    """Load a saved reward model for scoring (eval mode; on `device`, default_device() if None)."""
    from transformers import AutoModel, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    path = Path(path)
    spec = read_spec(path)
    encoder = AutoModel.from_pretrained(path, trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    _check_tokenizer(tokenizer, path)
    request = (load_request_encoder(path / REQUEST_FOLDER, spec.request_encoder)
               if spec.request_encoder is not None else None)
    model = RewardModel(encoder, tokenizer, spec, request)
    heads = load_file(str(path / HEADS_FILE))
    missing, unexpected = model.heads.load_state_dict(heads, strict=False)
    if missing or unexpected:
        raise RewardModelError(f"{path / HEADS_FILE}: missing {missing[:4]}, unexpected {unexpected[:4]} "
                               f"for labels {spec.labels}")
    return model.to(device or default_device()).eval()
