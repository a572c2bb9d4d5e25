"""Frozen-encoder features of the training rows, cached per source, and the tensors the
heads train on.

The encoder is frozen while the heads train, so each (prompt, response) is encoded once.
A source's features are cached in one safetensors file whose name hashes the encoder's
weights, the pooling settings and the source's texts: any change recomputes it. A request
encoder's features (one per distinct prompt) are cached apart, so adding one keeps the
pair features' cache.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mogrpo.atomic import atomic_write_file
from mogrpo.config.reward_training import RewardSourceConfig
from reward_training.dataset import SourceRows
from mogrpo.reward_model import RewardModel

log = logging.getLogger(__name__)

Texts = tuple[str, str]  # (prompt, response)


def _h(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def encoder_fingerprint(model: RewardModel) -> str:
    """Hash of what decides the features: encoder config and weights, pooling settings."""
    enc = model.encoder
    emb = enc.get_input_embeddings().weight.detach().float().contiguous().numpy().tobytes()
    last = list(enc.parameters())[-1].detach().float().contiguous().numpy().tobytes()
    s = model.spec
    return _h(enc.config.to_json_string(), emb, last, str(s.max_length), str(s.response_head_tokens), str(s.layers),
              str(s.pooling))


class FeatureCache:
    """A folder of `<hash>.safetensors` files; `None` folder = no caching."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    @classmethod
    def from_setting(cls, setting: str | None) -> FeatureCache:
        if setting is None:
            return cls(None)
        if setting == "default":
            from mogrpo.models import cache_dir

            return cls(cache_dir() / "reward_features")
        return cls(Path(setting).expanduser())

    def get(self, key: str) -> torch.Tensor | None:
        if self.folder is None or not (self.folder / f"{key}.safetensors").is_file():
            return None
        try:
            return load_file(str(self.folder / f"{key}.safetensors"))["features"]
        except Exception as err:  # a damaged cache file is recomputed, and says so
            log.warning("feature cache %s unreadable (%s): recomputing", key, err)
            return None

    def put(self, key: str, features: torch.Tensor) -> None:
        if self.folder is None:
            return
        atomic_write_file(self.folder / f"{key}.safetensors", lambda tmp: save_file({"features": features.contiguous()}, tmp))


def _source_texts(name: str, splits: Mapping[str, Mapping[str, SourceRows]]) -> list[Texts]:
    texts: set[Texts] = set()
    for by_source in splits.values():
        rows = by_source.get(name)
        if rows is None:
            continue
        texts.update((e.prompt, e.response) for e in rows.examples)
        for p in rows.pairs:
            texts.update({(p.prompt, p.chosen), (p.prompt, p.rejected)})
    return sorted(texts)


def encode_sources(model: RewardModel, splits: Mapping[str, Mapping[str, SourceRows]], cache: FeatureCache,
                   batch_size: int) -> dict[Texts, torch.Tensor]:
    """Features of every distinct (prompt, response) of every source: texts -> [F]."""
    fingerprint = encoder_fingerprint(model)
    request_fingerprint = model.request_encoder.fingerprint() if model.request_encoder is not None else None
    names = sorted({name for by_source in splits.values() for name in by_source})
    out: dict[Texts, torch.Tensor] = {}
    for name in names:
        texts = _source_texts(name, splits)
        key = _h(fingerprint, name, *(t for pair in texts for t in pair))
        feats = cache.get(key)
        if feats is None or len(feats) != len(texts):
            feats = model.encode([t[0] for t in texts], [t[1] for t in texts], batch_size, progress=f"encode {name}")
            cache.put(key, feats)
        else:
            log.info("encode %s: %d pairs from the feature cache", name, len(texts))
        if request_fingerprint is not None:
            feats = torch.cat([feats, _request_features(model, request_fingerprint, name, texts, cache)], dim=-1)
        out.update(zip(texts, feats))
    return out


def _request_features(model: RewardModel, fingerprint: str, name: str, texts: list[Texts],
                       cache: FeatureCache) -> torch.Tensor:
    """Request features [len(texts), R] of a source's pairs, from one encoding per distinct prompt."""
    prompts = sorted({t[0] for t in texts})
    key = _h("request", fingerprint, name, *prompts)
    feats = cache.get(key)
    if feats is None or len(feats) != len(prompts):
        feats = model.request_features(prompts, progress=f"requests {name}")
        cache.put(key, feats)
    row = {p: i for i, p in enumerate(prompts)}
    return feats[[row[t[0]] for t in texts]]


@dataclass
class FeatureSet:
    """One split's training tensors."""

    x: torch.Tensor  # [N, F] features of labelled examples
    targets: torch.Tensor  # [N, K] targets in [0, 1] (0 where masked)
    weights: torch.Tensor  # [N, K] source weight where the label is present, 0 where masked
    chosen: torch.Tensor  # [P, F] features of chosen responses
    rejected: torch.Tensor  # [P, F] features of rejected responses
    pair_label: torch.Tensor  # [P] long: column of the label each pair ranks


def build_feature_set(rows: Mapping[str, SourceRows], feats: Mapping[Texts, torch.Tensor], labels: list[str],
                      sources: Mapping[str, RewardSourceConfig]) -> FeatureSet:
    """Stack one split's features in the order `[e for r in rows.values() for e in r.examples]`."""
    col = {label: k for k, label in enumerate(labels)}
    weight = {name: src.weight for name, src in sources.items()}
    examples = [(e, weight.get(r.name, 1.0)) for r in rows.values() for e in r.examples]
    pairs = [p for r in rows.values() for p in r.pairs]
    dim = next(iter(feats.values())).shape[-1] if feats else 0
    targets = torch.zeros((len(examples), len(labels)))  # [N, K]
    weights = torch.zeros((len(examples), len(labels)))  # [N, K]
    for i, (e, w) in enumerate(examples):
        for label, t in e.targets.items():
            targets[i, col[label]], weights[i, col[label]] = t, w

    def stack(keys: list[Texts]) -> torch.Tensor:
        return torch.stack([feats[k] for k in keys]) if keys else torch.zeros((0, dim))

    return FeatureSet(
        x=stack([(e.prompt, e.response) for e, _ in examples]),
        targets=targets,
        weights=weights,
        chosen=stack([(p.prompt, p.chosen) for p in pairs]),
        rejected=stack([(p.prompt, p.rejected) for p in pairs]),
        pair_label=torch.tensor([col[p.label] for p in pairs], dtype=torch.long),
    )
