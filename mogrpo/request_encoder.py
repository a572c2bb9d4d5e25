"""The reward model's optional request encoder: a small chat LM (by default the policy,
SmolLM2-135M-Instruct) reads the request alone, wrapped in its chat template, and the
hidden states of the template's last token (`pooling: last`) and/or their mean over the
templated tokens (`mean`) at a few layers describe the request.

Instruction-tuned LMs carry whether a request is harmful along a few directions of their
residual stream at the end of the prompt (Arditi et al. 2024, "Refusal in language models
is mediated by a single direction"). On this repository's data a linear probe on
SmolLM2's layers 18, 22 and 26 separates XSTest's safe from unsafe prompts better than the
pair encoder's frozen features, the mean over the tokens adds to the last token's state,
and the pair and request features err on different prompts; the heads of the
request labels (`labels`; by default the safety head) read both (measurements in
reward_training/README.md).

Saved inside the reward model folder as `request_encoder/`: the LM's body cut after its
last used layer (a plain Hugging Face folder, safetensors) and its tokenizer.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mogrpo.errors import UserError

FOLDER = "request_encoder"
POOLINGS = ("last", "mean")  # views of a layer: the last templated token, the mean over its tokens
PROBE_VIEWS = ("last", "mean")  # what a ProbeHead reads of the deepest layer, in this order


class RequestEncoderError(UserError, ValueError):
    """A request encoder's settings or folder are unusable."""


@dataclass
class RequestEncoderSpec:
    """Saved in reward_model.json under `request_encoder`."""

    source: str = "smollm2-135m-instruct"  # built-in name, folder or hub id it was built from
    layers: list[int] = field(default_factory=lambda: [18, 22, 26])  # hidden states read (0 = embeddings)
    pooling: list[str] = field(default_factory=lambda: ["last"])  # per layer: "last" token, "mean" over tokens
    labels: list[str] = field(default_factory=lambda: ["safety"])  # heads that read these features
    max_length: int = 256  # tokens of the templated request; a longer one keeps its end
    probe_label: str | None = None  # a label whose head is a linear probe on the deepest layer's [last, mean] view


class RequestEncoder(nn.Module):
    """Requests -> features [N, len(layers) * len(pooling) * hidden]: at each layer, the last
    templated token's hidden state and/or the mean over the templated tokens. Every distinct
    request is encoded once per call."""

    def __init__(self, body: nn.Module, tokenizer, spec: RequestEncoderSpec):
        super().__init__()
        unknown = [how for how in spec.pooling if how not in POOLINGS]
        if unknown or not spec.pooling:
            raise RequestEncoderError(f"request_encoder.pooling {spec.pooling}: expected one or more of {list(POOLINGS)}")
        if spec.probe_label is not None and not set(PROBE_VIEWS) <= set(spec.pooling):
            raise RequestEncoderError(f"request_encoder.probe_label {spec.probe_label!r} needs pooling "
                                      f"{list(PROBE_VIEWS)}, got {spec.pooling}")
        self.body, self.tokenizer, self.spec = body, tokenizer, spec
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # causal attention: right padding leaves real tokens untouched
        tokenizer.truncation_side = "left"

    @property
    def dim(self) -> int:
        return len(self.spec.layers) * len(self.spec.pooling) * self.body.config.hidden_size

    def probe_columns(self) -> torch.Tensor:
        """Column indices, within `features`, of the deepest layer's PROBE_VIEWS -> [2 * H]: what
        the fine-tuning probe reads."""
        hidden, per_layer = self.body.config.hidden_size, len(self.spec.pooling)
        top = self.spec.layers.index(max(self.spec.layers))
        starts = [(top * per_layer + self.spec.pooling.index(how)) * hidden for how in PROBE_VIEWS]
        return torch.cat([torch.arange(s, s + hidden) for s in starts])

    def template(self, request: str) -> str:
        if self.tokenizer.chat_template is None:
            return request
        return self.tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                                  add_generation_prompt=True)

    @torch.inference_mode()
    def features(self, requests: Sequence[str], batch_size: int = 32, progress: str | None = None) -> torch.Tensor:
        """[N, dim] float32 on the CPU, in the order of `requests`; `progress` names a progress bar."""
        distinct = sorted(set(requests), key=len)
        device = next(self.body.parameters()).device
        rows: dict[str, torch.Tensor] = {}
        starts = range(0, len(distinct), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=progress, unit="batch", dynamic_ncols=True)
        for start in starts:
            chunk = distinct[start:start + batch_size]
            enc = self.tokenizer([self.template(r) for r in chunk], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.spec.max_length, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            # hidden_states[-1] has passed the LM's final norm (as HF reports it), at build and load alike
            hidden = self.body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                               output_hidden_states=True).hidden_states
            mask = enc["attention_mask"]
            last = mask.sum(1) - 1  # [b] index of each request's last token (right padding)
            m = mask.unsqueeze(-1).float()  # [b, T, 1]
            rows_b = torch.arange(len(chunk), device=device)
            views = {"last": lambda h: h[rows_b, last], "mean": lambda h: (h * m).sum(1) / m.sum(1)}  # [b, T, H] -> [b, H]
            feats = torch.cat([views[how](hidden[layer].float()) for layer in self.spec.layers
                               for how in self.spec.pooling], dim=-1)  # [b, dim]
            rows.update(zip(chunk, feats.cpu()))
        if not requests:
            return torch.zeros((0, self.dim))
        return torch.stack([rows[r] for r in requests])

    def fingerprint(self) -> str:
        """Hash of what decides the features (config, some weights, layers, length). The top
        layer's weights are in it, so a fine-tuned encoder never shares cached features."""
        h = hashlib.sha256()
        emb = self.body.get_input_embeddings().weight
        last = list(self.body.parameters())[-1]
        top = list(self.body.layers[-1].parameters())
        for part in (self.body.config.to_json_string(), str(self.spec.layers), str(self.spec.max_length),
                     *([str(self.spec.pooling)] if self.spec.pooling != ["last"] else []),  # old keys stay valid
                     str(self.tokenizer.chat_template)):
            h.update(part.encode())
        for t in (emb, last, *top):
            h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def save(self, folder: Path) -> None:
        """Safetensors and tokenizer; in bfloat16 where that loses nothing (SmolLM2 ships in bf16)."""
        lossless = all(torch.equal(t, t.bfloat16().to(t.dtype)) for t in self.body.state_dict().values()
                       if t.is_floating_point())
        # a copy: casting the live body would also round its float32 rotary buffers
        body = copy.deepcopy(self.body).to(torch.bfloat16) if lossless else self.body
        body.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


class RequestHead(nn.Module):
    """A request label's regressor: features [B, F + R] -> logit [B]. The pair features pass
    a LayerNorm; the request features are standardised per dimension with the training
    split's statistics (`set_request_stats`), since an LM's residual stream has a few
    dimensions far larger than the rest; then one MLP reads both."""

    def __init__(self, pair_dim: int, request_dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.pair_dim = pair_dim
        self.pair_norm = nn.LayerNorm(pair_dim)
        self.register_buffer("request_mean", torch.zeros(request_dim))
        self.register_buffer("request_std", torch.ones(request_dim))
        self.net = nn.Sequential(nn.Linear(pair_dim + request_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    @torch.no_grad()
    def set_request_stats(self, features: torch.Tensor) -> None:
        """Per-dimension mean and std of the request part of training features [N, F + R]."""
        request = features[:, self.pair_dim:].float()
        self.request_mean.copy_(request.mean(0))
        self.request_std.copy_(request.std(0).nan_to_num(1.0).clamp(min=1e-3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pair, request = features[:, :self.pair_dim], features[:, self.pair_dim:]
        x = torch.cat([self.pair_norm(pair), (request - self.request_mean) / self.request_std], dim=-1)
        return self.net(x).squeeze(-1)  # [B]


class ProbeHead(nn.Module):
    """A request label's linear probe on some columns of the features [B, F + R] -> logit [B]:
    the request encoder's fine-tuning probe (reward_training/request_finetune.py), kept as the
    label's head instead of a head refit on the tuned features. Reads raw features, as trained."""

    def __init__(self, columns: torch.Tensor):
        super().__init__()
        self.register_buffer("columns", columns, persistent=False)
        self.linear = nn.Linear(len(columns), 1).requires_grad_(False)  # trained with the encoder, not by fit_heads

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features[:, self.columns]).squeeze(-1)  # [B]


def _check_layers(spec: RequestEncoderSpec, n_layers: int, where: str) -> None:
    bad = [layer for layer in spec.layers if not 0 <= layer <= n_layers]
    if bad or not spec.layers:
        raise RequestEncoderError(f"request_encoder.layers {spec.layers}: {where} has {n_layers} layers "
                                  f"(use 0..{n_layers}, at least one)")


def build_request_encoder(spec: RequestEncoderSpec) -> RequestEncoder:
    """The LM body of `spec.source`, cut after its deepest used layer (frozen, eval mode)."""
    from transformers import AutoModel, AutoTokenizer

    from mogrpo.models import resolve_model

    folder = resolve_model(spec.source)
    body = AutoModel.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32).eval()
    if not hasattr(body, "layers"):
        raise RequestEncoderError(f"request_encoder.source {spec.source!r}: {type(body).__name__} is not a decoder "
                                  "with a `layers` list (use a Llama-style chat model)")
    _check_layers(spec, len(body.layers), spec.source)
    keep = max(spec.layers)
    body.layers = body.layers[:keep]
    body.config.num_hidden_layers = keep
    if hasattr(body.config, "layer_types") and body.config.layer_types:
        body.config.layer_types = body.config.layer_types[:keep]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return RequestEncoder(body, tokenizer, spec)


def load_request_encoder(folder: Path, spec: RequestEncoderSpec) -> RequestEncoder:
    from transformers import AutoModel, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise RequestEncoderError(f"{folder} is missing: the reward model's spec names a request encoder")
    body = AutoModel.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32).eval()
    _check_layers(spec, body.config.num_hidden_layers, str(folder))
    return RequestEncoder(body, AutoTokenizer.from_pretrained(folder, trust_remote_code=False), spec)
