"""Policy losses of the GRPO family, one small function per variant behind a registry.

Every variant shares the clipped surrogate of PPO (Schulman et al. 2017, arXiv 1707.06347)
at the token level, with the advantage of the response on each of its tokens,

    l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A) * w_t + beta * KL_t

and differs in the ratio rho (token or sequence) and in how the token losses are reduced.
w_t is the truncated importance weight between the sampler and the learner (1 if none) and
KL_t the per-token KL estimate to the reference (`kl.kl_estimate`, only with a reference).

Micro-batching is exact by construction: a variant gets one micro-batch plus the global
denominators of its mini-batch (`LossSettings.total_sequences`, `.total_tokens`) and divides
by those, never by micro-batch counts, so

    sum over micro-batches of policy_loss(...)[0] == the loss of the whole mini-batch

and so are the gradients accumulated by calling backward on each. A row must lie wholly in
one micro-batch (per-sequence means use the row's own token count). The metrics are built
the same way: sum them over micro-batches (`accumulate_metrics`), except `*_max` (take the max).
Under data parallelism, where gradients are averaged over ranks, pass the global totals
divided by the world size; the average over ranks is then the global mini-batch loss. Let
nothing else rescale the loss (DeepSpeed's `engine.backward` divides by its
gradient_accumulation_steps unless called with scale_wrt_gas=False).

    loss, metrics = policy_loss("grpo", PolicyLossInput(...), LossSettings(...))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from learner.kl import KLEstimator, kl_estimate


# ---------------------------------------------------------------------------------------------
# records


@dataclass
class PolicyLossInput:
    """One micro-batch of response tokens. B rows, T response positions (right-padded)."""

    logp: Tensor  # [B, T] log pi_theta of each response token, from this forward (requires grad)
    old_logp: Tensor  # [B, T] log pi_old, the policy the ratio is taken against (no grad)
    advantages: Tensor  # [B] advantage of each response (`advantages.group_advantages`)
    mask: Tensor  # [B, T] 1 for response tokens, 0 for padding and for filtered rows
    ref_logp: Tensor | None = None  # [B, T] log pi_ref; None when kl_coef == 0
    is_weights: Tensor | None = None  # [B, T] truncated IS weights (`truncated_is_weights`); None = 1
    kl_rows: Tensor | None = None  # [B] bool, rows whose tokens carry the KL term; None = all

    def __post_init__(self):
        shape = tuple(self.logp.shape)
        if len(shape) != 2:
            raise ValueError(f"logp must have shape [B, T], got {list(shape)}")
        for name in ("old_logp", "mask", "ref_logp", "is_weights"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} has shape {list(value.shape)}, expected {list(shape)} like logp")
        for name in ("advantages", "kl_rows"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape[:1]:
                raise ValueError(f"{name} has shape {list(value.shape)}, expected [{shape[0]}]")


@dataclass(frozen=True)
class LossSettings:
    """Knobs of the loss (from `LossConfig`) and the denominators of the current mini-batch."""

    clip_eps_low: float
    """The ratio is clipped below at 1 - clip_eps_low."""
    clip_eps_high: float
    """The ratio is clipped above at 1 + clip_eps_high (DAPO clip-higher: ~0.28)."""
    kl_coef: float
    """beta, the weight of the per-token KL in the loss (0: no KL term, ref_logp may be None)."""
    kl_estimator: KLEstimator
    """"k1", "k2" or "k3" (`kl.kl_estimate`)."""
    dr_grpo_constant: int
    """Dr. GRPO's constant divisor of each row's token sum (usually max_new_tokens); unused by the others."""
    total_sequences: float
    """Rows of the whole mini-batch (all micro-batches) with at least one unmasked token.
    Under data parallelism, where gradients are averaged over ranks: the global count / world size."""
    total_tokens: float
    """Unmasked tokens of the whole mini-batch (all micro-batches); same data-parallel rule."""

    def __post_init__(self):  # the knobs are validated by LossConfig; the counts come from the data
        for name in ("total_sequences", "total_tokens"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------------
# helpers


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `values` where `mask` is nonzero; masked entries may hold anything, even NaN."""
    kept = torch.where(mask.bool(), values, 0.0)
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `values` where `mask` is nonzero, over `dim` (all if None); 0 where nothing is kept."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def truncated_is_weights(old_logp: Tensor, behaviour_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance weights min(pi_old / pi_behaviour, cap), detached.

    Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
    training" (https://fengyao.notion.site/off-policy-rl): the sampler (vLLM, bf16, its own
    kernels) and the learner give different probabilities to the same token, so the
    samples are slightly off-policy for the learner's pi_old. Weighting each token's
    policy-gradient loss by the ratio corrects that; truncating at `cap` bounds the variance
    (TIS). Padding positions are left as computed; the loss ignores them.

    Args:
        old_logp: [B, T] log pi_old of the sampled tokens, computed by the learner.
        behaviour_logp: [B, T] log-probs the sampler returned for the same tokens.
        cap: truncation C >= 1.

    Returns:
        [B, T] weights in [0, cap], no grad.
    """
    with torch.no_grad():
        return torch.exp(old_logp - behaviour_logp).clamp(max=cap)  # [B, T]


def accumulate_metrics(per_micro_batch: Sequence[dict[str, Tensor]]) -> dict[str, float]:
    """Mini-batch metrics from the micro-batches' metrics: sum each, but max `*_max` ones."""
    out = {}
    for key in per_micro_batch[0]:
        values = [float(m[key]) for m in per_micro_batch]
        out[key] = max(values) if key.endswith("_max") else sum(values)
    return out


def _clipped_surrogate(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float):
    """Token loss -min(rho A, clip(rho) A) and where each side of the clip is active.

    The clip is active (the token gets no policy gradient) when A > 0 and rho > 1 + eps_high,
    or A < 0 and rho < 1 - eps_low; elsewhere the unclipped term is the minimum.
    """
    adv = advantages[:, None]  # [B, 1]
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # [B, T]
    pg = torch.maximum(unclipped, clipped)  # [B, T] = -min(rho A, clip(rho) A)
    clip_low = (ratio < 1.0 - eps_low) & (adv < 0)  # [B, T]
    clip_high = (ratio > 1.0 + eps_high) & (adv > 0)  # [B, T]
    return pg, clip_low, clip_high


@dataclass
class _Terms:
    """Per-token pieces every variant reduces: the loss and what the metrics need."""

    pg: Tensor  # [B, T] policy-gradient loss, IS-weighted
    kl: Tensor  # [B, T] KL estimate (zeros without a reference)
    loss: Tensor  # [B, T] pg + kl_coef * kl
    ratio: Tensor  # [B, T]
    clip_low: Tensor  # [B, T] bool
    clip_high: Tensor  # [B, T] bool
    is_weights: Tensor  # [B, T]
    mask: Tensor  # [B, T] bool


def _sanitise(inp: PolicyLossInput, s: LossSettings):
    """Put neutral values on padding (logp = old = ref = 0, w = 1) so no NaN/inf pad leaks into
    the loss or, through a 0 * NaN in backward, into the gradient."""
    if s.kl_coef > 0 and inp.ref_logp is None:
        raise ValueError(f"kl_coef={s.kl_coef} needs ref_logp (the reference policy's log-probs)")
    mask = inp.mask.bool()  # [B, T]
    logp = torch.where(mask, inp.logp, 0.0)  # [B, T]
    old_logp = torch.where(mask, inp.old_logp.detach(), 0.0)  # [B, T]
    ref_logp = None if inp.ref_logp is None else torch.where(mask, inp.ref_logp.detach(), 0.0)
    w = torch.ones_like(logp) if inp.is_weights is None else torch.where(mask, inp.is_weights.detach(), 1.0)
    return mask, logp, old_logp, ref_logp, w.detach()


def _token_terms(ratio: Tensor, logp: Tensor, ref_logp: Tensor | None, w: Tensor, mask: Tensor,
                 advantages: Tensor, s: LossSettings, kl_rows: Tensor | None = None) -> _Terms:
    pg, clip_low, clip_high = _clipped_surrogate(ratio, advantages.detach(), s.clip_eps_low, s.clip_eps_high)
    pg = pg * w  # [B, T] truncated IS correction of the policy gradient only
    if ref_logp is None:
        kl = torch.zeros_like(logp)  # [B, T]
    elif kl_rows is None:
        kl = kl_estimate(logp, ref_logp, s.kl_estimator)  # [B, T]
    else:  # rows without KL get ref = logp first, so no inf there can turn a zero gradient into NaN
        keep = kl_rows.bool()[:, None]  # [B, 1]
        kl = torch.where(keep, kl_estimate(logp, torch.where(keep, ref_logp, logp.detach()), s.kl_estimator), 0.0)
    loss = pg + s.kl_coef * kl if s.kl_coef > 0 else pg  # [B, T]
    return _Terms(pg, kl, loss, ratio, clip_low, clip_high, w, mask)


def _metrics(loss: Tensor, pg_loss: Tensor, t: _Terms, s: LossSettings) -> dict[str, Tensor]:
    """Detached metrics, each this micro-batch's share of the mini-batch value (sum them),
    except ratio_max (take the max). Token averages divide by total_tokens."""
    def per_token(x: Tensor) -> Tensor:
        return masked_sum(x.to(loss.dtype), t.mask) / s.total_tokens

    with torch.no_grad():
        ratio_max = torch.where(t.mask, t.ratio, 0.0).max()  # ratios are > 0; 0 for an all-padding batch
        return {
            "loss": loss.detach(),
            "pg_loss": pg_loss.detach(),
            "kl": per_token(t.kl),
            "clip_frac": per_token(t.clip_low | t.clip_high),
            "clip_frac_low": per_token(t.clip_low),
            "clip_frac_high": per_token(t.clip_high),
            "ratio_mean": per_token(t.ratio),
            "ratio_max": ratio_max.detach(),
            "is_weight_mean": per_token(t.is_weights),
        }


def _per_sequence_mean(values: Tensor, mask: Tensor, s: LossSettings) -> Tensor:
    """sum_i [ (1/|y_i|) sum_t values_it ] / total_sequences (empty rows contribute 0)."""
    lengths = mask.sum(dim=1).clamp(min=1)  # [B]
    return (masked_sum(values, mask, dim=1) / lengths).sum() / s.total_sequences


# ---------------------------------------------------------------------------------------------
# registry

PolicyLoss = Callable[[PolicyLossInput, LossSettings], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class LossVariant:
    loss: PolicyLoss
    advantage_scale: Literal["std", "none"]
    """How `group_advantages` scales the group-centred rewards this loss expects."""


LOSS_VARIANTS: dict[str, LossVariant] = {}
"""The one list of loss variants: `LossConfig.variant` names one of them."""


def register_loss(name: str, advantage_scale: Literal["std", "none"] = "std") -> Callable[[PolicyLoss], PolicyLoss]:
    """Add a variant to `LOSS_VARIANTS` under `name`, with the advantage scaling it expects."""

    def add(fn: PolicyLoss) -> PolicyLoss:
        if name in LOSS_VARIANTS:
            raise ValueError(f"loss variant {name!r} is already registered")
        LOSS_VARIANTS[name] = LossVariant(fn, advantage_scale)
        return fn

    return add


def loss_variant(name: str) -> LossVariant:
    """The registered variant `name`, or a ValueError naming the registered ones."""
    if name not in LOSS_VARIANTS:
        raise ValueError(f"unknown loss variant {name!r}; registered: {sorted(LOSS_VARIANTS)}")
    return LOSS_VARIANTS[name]


def policy_loss(variant: str, inp: PolicyLossInput, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """This micro-batch's share of the mini-batch loss of `variant`, and detached metrics.

    Returns:
        loss: scalar; call backward on it per micro-batch, the sum over micro-batches is the
            mini-batch loss.
        metrics: detached scalars loss, pg_loss, kl (per token), clip_frac (share of tokens
            whose ratio was clipped), clip_frac_low, clip_frac_high, ratio_mean, ratio_max,
            is_weight_mean; combine micro-batches with `accumulate_metrics`.
    """
    return loss_variant(variant).loss(inp, s)


# ---------------------------------------------------------------------------------------------
# variants


@register_loss("grpo")
def grpo_loss(inp: PolicyLossInput, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO, DeepSeekMath (Shao et al. 2024, arXiv 2402.03300, eq. 3), token ratio, per-sequence mean.

        rho_it = exp(logp_it - old_logp_it)
        l_it   = -min(rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i) * w_it + beta * KL_it
        L      = sum_i [ (1/|y_i|) sum_t l_it ] / total_sequences

    Expects advantages from `group_advantages(scale="std")`.

    1. Neutral values on padding.
    2. Token ratio and clipped surrogate, IS weights, KL.
    3. Mean over each sequence's tokens, then sum over sequences / total_sequences.
    """
    # 1. padding
    mask, logp, old_logp, ref_logp, w = _sanitise(inp, s)  # [B, T] each
    # 2. token terms
    ratio = torch.exp(logp - old_logp)  # [B, T]
    t = _token_terms(ratio, logp, ref_logp, w, mask, inp.advantages, s, inp.kl_rows)
    # 3. per-sequence mean, then over the mini-batch's sequences
    loss = _per_sequence_mean(t.loss, mask, s)  # scalar
    return loss, _metrics(loss, _per_sequence_mean(t.pg, mask, s), t, s)


@register_loss("dr_grpo", advantage_scale="none")
def dr_grpo_loss(inp: PolicyLossInput, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """Dr. GRPO, "Understanding R1-Zero-like training" (Liu et al. 2025, arXiv 2503.20783).

        l_it = as GRPO
        L    = sum_i [ (1/C) sum_t l_it ] / total_sequences,   C = dr_grpo_constant

    Removes GRPO's two biases: the 1/|y_i| length normalisation (which favours long wrong
    answers and short right ones) is replaced by a constant C (usually max_new_tokens), and
    the advantages are not divided by the group std: expects `group_advantages(scale="none")`.

    1. Neutral values on padding.
    2. Token ratio and clipped surrogate, IS weights, KL.
    3. Sum over each sequence's tokens / C, then sum over sequences / total_sequences.
    """
    # 1. padding
    mask, logp, old_logp, ref_logp, w = _sanitise(inp, s)  # [B, T] each
    # 2. token terms
    ratio = torch.exp(logp - old_logp)  # [B, T]
    t = _token_terms(ratio, logp, ref_logp, w, mask, inp.advantages, s, inp.kl_rows)
    # 3. constant normaliser
    denominator = s.dr_grpo_constant * s.total_sequences
    loss = masked_sum(t.loss, mask) / denominator  # scalar
    return loss, _metrics(loss, masked_sum(t.pg, mask) / denominator, t, s)


@register_loss("dapo")
def dapo_loss(inp: PolicyLossInput, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """DAPO (Yu et al. 2025, arXiv 2503.14476, secs. 3.1 and 3.3): clip-higher, token-level mean.

        l_it = as GRPO, with the asymmetric clip (1 - eps_low, 1 + eps_high), eps_high > eps_low
        L    = sum_i sum_t l_it / total_tokens

    Every token of the mini-batch weighs the same, so long responses are not diluted
    (sec. 3.3). Expects `group_advantages(scale="std")`; DAPO's dynamic sampling
    (`informative_groups`), overlong filtering (mask the rows) and soft overlong penalty
    (`overlong_penalty`, added to the reward) happen before the loss.

    1. Neutral values on padding.
    2. Token ratio and clipped surrogate, IS weights, KL.
    3. Sum over all tokens / total_tokens.
    """
    # 1. padding
    mask, logp, old_logp, ref_logp, w = _sanitise(inp, s)  # [B, T] each
    # 2. token terms
    ratio = torch.exp(logp - old_logp)  # [B, T]
    t = _token_terms(ratio, logp, ref_logp, w, mask, inp.advantages, s, inp.kl_rows)
    # 3. token-level mean over the mini-batch
    loss = masked_sum(t.loss, mask) / s.total_tokens  # scalar
    return loss, _metrics(loss, masked_sum(t.pg, mask) / s.total_tokens, t, s)


@register_loss("gspo")
def gspo_loss(inp: PolicyLossInput, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071), in its GSPO-token form: a sequence-level ratio.

        s_i   = exp( (1/|y_i|) sum_t (logp_it - old_logp_it) )        length-normalised sequence ratio
        s_it  = sg[s_i] * exp(logp_it - sg[logp_it])                  value s_i, gradient s_i * grad logp_it
        l_it  = -min(s_it A_i, clip(s_it, 1 - eps_low, 1 + eps_high) A_i) * w_i + beta * KL_it
        L     = sum_i [ (1/|y_i|) sum_t l_it ] / total_sequences

    The token form has the same value and gradient as the sequence objective
    -min(s_i A_i, clip(s_i) A_i) (when A_it = A_i, as here), and clipping acts on whole
    sequences. The paper's clip range is far narrower than GRPO's (3e-4 / 4e-4).
    Expects `group_advantages(scale="std")`.

    The importance correction is per sequence too, like the ratio: w_i = exp(mean_t log w_it),
    the length-normalised sequence weight (with untruncated weights, s_i * w_i is the
    sequence ratio against the sampler itself). A per-token w_it would break the equality
    of the token form's gradient with the gradient of its value.

    1. Neutral values on padding.
    2. Sequence ratio and its token form, sequence IS weight, clipped surrogate, KL.
    3. Mean over each sequence's tokens, then sum over sequences / total_sequences.
    """
    # 1. padding
    mask, logp, old_logp, ref_logp, w = _sanitise(inp, s)  # [B, T] each
    # 2. sequence-level ratio in token form, sequence-level IS weight
    lengths = mask.sum(dim=1).clamp(min=1)  # [B]
    seq_log_ratio = masked_sum(logp - old_logp, mask, dim=1) / lengths  # [B]
    seq_ratio = torch.exp(seq_log_ratio)  # [B] s_i
    ratio = seq_ratio.detach()[:, None] * torch.exp(logp - logp.detach())  # [B, T] s_it
    seq_w = torch.exp(masked_sum(w.log(), mask, dim=1) / lengths)  # [B] w_i
    t = _token_terms(ratio, logp, ref_logp, seq_w[:, None].expand_as(w), mask, inp.advantages, s, inp.kl_rows)
    # 3. per-sequence mean, then over the mini-batch's sequences
    loss = _per_sequence_mean(t.loss, mask, s)  # scalar
    return loss, _metrics(loss, _per_sequence_mean(t.pg, mask, s), t, s)
