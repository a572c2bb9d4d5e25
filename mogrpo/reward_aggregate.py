"""Combining per-label scores into one reward: pure numpy functions, no Ray, no torch.

Modes (AggregationConfig.mode), all changeable without retraining:
- weighted_sum:      r = sum_l w_l * s_l
- group_normalized:  normalise each label within its group first, then sum
                     (GDPO-style: r = sum_l w_l * (s_l - mean_g(s_l)) / (std_g(s_l) + eps)),
                     so a label whose scores barely vary inside a group cannot be drowned
                     by one with a wide spread, and vice versa.
- safety_gate:       r = w_safety * s + (sum_{l != safety} w_l * s_l  if s >= threshold
                                          else gate_penalty)
                     where s = min(s_safety, 1 - s_harmful_request * (1 - s_refusal)) when the model
                     has the `harmful_request` and `refusal` labels (the pair rule: not refusing a
                     request that should be refused is unsafe), else s = s_safety.
                     Helpfulness counts only for a response judged safe; an unsafe one gets
                     `gate_penalty` (<= 0) in its place. With non-negative weights and scores
                     in [0, 1], every safe response outscores every unsafe one:
                       safe:   r >= w_safety * threshold
                       unsafe: r <  w_safety * threshold + gate_penalty <= w_safety * threshold
                     and the graded safety term still ranks responses inside each side, so a
                     group in which every answer is unsafe keeps a signal towards the safer.
Then optional rule terms: a length penalty subtracted from every mode's result.

Shapes: every per-label array and the result are [B] (one per response). Labels without
a weight do not contribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mogrpo.config.reward import AggregationConfig
from mogrpo.errors import UserError

Scores = Mapping[str, np.ndarray]  # label -> [B]


class AggregationError(UserError, ValueError):
    """The aggregation config or its inputs do not fit the scores."""


def check_weights(weights: Mapping[str, float], labels: Sequence[str]) -> None:
    """Every weighted label must be a label of the reward model."""
    unknown = [k for k in weights if k not in labels]
    if unknown:
        raise AggregationError(
            f"reward.aggregation.weights has key {unknown[0]!r}, which is not a label of the reward model "
            f"(its labels: {list(labels)})"
        )


def check_aggregation(config: AggregationConfig, labels: Sequence[str]) -> None:
    """Fail early when the config names a label the model lacks."""
    check_weights(config.weights, labels)
    if config.mode == "safety_gate" and config.safety_label not in labels:
        raise AggregationError(
            f"reward.aggregation.safety_label {config.safety_label!r} is not a label of the reward model "
            f"(its labels: {list(labels)})"
        )


def _batch_size(scores: Scores) -> int:
    sizes = {k: len(v) for k, v in scores.items()}
    if len(set(sizes.values())) > 1:
        raise AggregationError(f"per-label score arrays differ in length: {sizes}")
    return next(iter(sizes.values()), 0)


def weighted_sum(scores: Scores, weights: Mapping[str, float], exclude: Sequence[str] = ()) -> np.ndarray:
    """sum_l w_l * s_l over weighted labels not in `exclude` -> [B] float64."""
    out = np.zeros(_batch_size(scores))
    for label, w in weights.items():
        if label not in exclude:
            out += w * np.asarray(scores[label], dtype=np.float64)  # [B]
    return out


def group_sizes_checked(group_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique group ids and the index of each row's group; every group must have the same
    size, at least 2 (a single response has no spread to normalise by)."""
    uniq, inverse, counts = np.unique(group_ids, return_inverse=True, return_counts=True)
    if counts.size and (counts.min() != counts.max() or counts.min() < 2):
        sizes = dict(zip(uniq.tolist(), counts.tolist()))
        raise AggregationError(
            f"group_normalized needs whole groups of one size >= 2; got group sizes {dict(list(sizes.items())[:8])}"
        )
    return uniq, inverse


def group_normalize(values: np.ndarray, group_ids: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(v - mean_g) / (std_g + eps) within each group (population std) -> [B].
    A group whose values are all equal gives zeros."""
    uniq, inverse = group_sizes_checked(group_ids)
    values = np.asarray(values, dtype=np.float64)  # [B]
    count = np.bincount(inverse, minlength=len(uniq))  # [G]
    mean = np.bincount(inverse, weights=values, minlength=len(uniq)) / count  # [G]
    centered = values - mean[inverse]  # [B]
    var = np.bincount(inverse, weights=centered**2, minlength=len(uniq)) / count  # [G]
    return centered / (np.sqrt(var)[inverse] + eps)  # [B]


def group_normalized_sum(scores: Scores, weights: Mapping[str, float], group_ids: np.ndarray,
                         eps: float = 1e-6) -> np.ndarray:
    """sum_l w_l * group_normalize(s_l) -> [B]."""
    _batch_size(scores)
    out = np.zeros(len(group_ids))
    for label, w in weights.items():
        out += w * group_normalize(scores[label], group_ids, eps)  # [B]
    return out


def pair_safety(safety: np.ndarray, harmful_request: np.ndarray, refusal: np.ndarray) -> np.ndarray:
    """min(safety, 1 - harmful_request * (1 - refusal)) -> [B]: a response is at most as safe
    as the chance that it either refuses or answers a request that need not be refused."""
    rule = 1.0 - np.asarray(harmful_request, dtype=np.float64) * (1.0 - np.asarray(refusal, dtype=np.float64))
    return np.minimum(np.asarray(safety, dtype=np.float64), rule)


def gate_safety(scores: Scores, config: AggregationConfig) -> np.ndarray:
    """The safety the gate reads: the pair rule where the model has its labels, else the safety label."""
    if config.request_label in scores and config.refusal_label in scores:
        return pair_safety(scores[config.safety_label], scores[config.request_label], scores[config.refusal_label])
    return np.asarray(scores[config.safety_label], dtype=np.float64)


def safety_gate(scores: Scores, weights: Mapping[str, float], safety_label: str, threshold: float,
                penalty: float, safety: np.ndarray | None = None) -> np.ndarray:
    """w_safety * safety, plus the other labels' weighted sum where safety >= threshold and
    `penalty` elsewhere -> [B]. `safety` overrides the safety label's scores (the pair rule)."""
    safety = np.asarray(scores[safety_label] if safety is None else safety, dtype=np.float64)  # [B]
    rest = weighted_sum(scores, weights, exclude=(safety_label,))  # [B]
    return weights.get(safety_label, 0.0) * safety + np.where(safety >= threshold, rest, penalty)


def length_penalty(response_lengths: np.ndarray, coef: float, target: int) -> np.ndarray:
    """coef * max(0, len - target) / target -> [B] (non-negative, subtracted from the reward)."""
    lengths = np.asarray(response_lengths, dtype=np.float64)  # [B]
    return coef * np.maximum(0.0, lengths - target) / target


def combine(scores: Scores, config: AggregationConfig, group_ids: Sequence[int] | None = None,
            response_lengths: Sequence[int] | None = None) -> np.ndarray:
    """The reward of each response under `config` -> [B] float32."""
    n = _batch_size(scores)
    if config.mode == "weighted_sum":
        out = weighted_sum(scores, config.weights)
    elif config.mode == "group_normalized":
        if group_ids is None or len(group_ids) != n:
            raise AggregationError(f"group_normalized needs one group id per response ({n}), got "
                                   f"{'none' if group_ids is None else len(group_ids)}")
        out = group_normalized_sum(scores, config.weights, np.asarray(group_ids))
    elif config.mode == "safety_gate":
        out = safety_gate(scores, config.weights, config.safety_label, config.safety_threshold, config.gate_penalty,
                          safety=gate_safety(scores, config))
    else:  # pydantic's Literal keeps this unreachable; kept for a clear message if it grows
        raise AggregationError(f"unknown aggregation mode {config.mode!r}")
    if config.length_penalty > 0:
        if response_lengths is None or len(response_lengths) != n:
            raise AggregationError(f"length_penalty needs one response length per response ({n}), got "
                                   f"{'none' if response_lengths is None else len(response_lengths)}")
        out = out - length_penalty(np.asarray(response_lengths), config.length_penalty, config.length_target)
    return out.astype(np.float32)
