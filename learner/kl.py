"""Per-token estimators of KL(pi_theta || pi_ref) and the KL-in-reward penalty.

J. Schulman, "Approximating KL divergence" (2020), http://joschu.net/blog/kl-approx.html.
For a token y sampled from pi_theta, with log_ratio = log pi_ref(y) - log pi_theta(y):

    k1 = -log_ratio                            unbiased, high variance, can be negative
    k2 = log_ratio^2 / 2                       biased (low for small KL), low variance, >= 0
    k3 = exp(log_ratio) - log_ratio - 1        unbiased, low variance, >= 0 (exp(x) >= 1 + x)

These are estimates of the KL's *value*. Used as a differentiable loss term (KL in the
loss), their expected gradients differ (Tang & Munos 2025, "On a few pitfalls in KL
divergence gradient estimation for RL", arXiv 2506.09477), per token and on-policy:
  - k1: E[grad log pi_theta] = 0, no regularising gradient at all;
  - k2: E[(log pi_theta - log pi_ref) grad log pi_theta] = grad KL(pi_theta || pi_ref);
  - k3: E[(1 - pi_ref / pi_theta) grad log pi_theta] = grad KL(pi_ref || pi_theta), the
    *forward* KL. GRPO (DeepSeekMath, arXiv 2402.03300, eq. 4) uses k3 in the loss.
(A per-token loss term also ignores how a token's distribution changes the later tokens,
so it is a partial gradient of the sequence KL; same paper.)
In the reward (`kl_reward_penalty`) the value is what matters and no gradient flows.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(logp: Tensor, ref_logp: Tensor, estimator: KLEstimator) -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) (Schulman's k1, k2, k3; see the module docstring).

    Args:
        logp: [B, T] log pi_theta of each sampled token (may require grad).
        ref_logp: [B, T] log pi_ref of the same tokens.
        estimator: "k1", "k2" or "k3".

    Returns:
        [B, T] estimate per token; padding positions are not masked here.
    """
    log_ratio = ref_logp - logp  # [B, T] log(pi_ref / pi_theta)
    if estimator == "k1":
        return -log_ratio  # [B, T]
    if estimator == "k2":
        return 0.5 * log_ratio.square()  # [B, T]
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0  # [B, T]
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")


def kl_reward_penalty(
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    coef: float,
    estimator: KLEstimator,
) -> Tensor:
    """KL in the reward: a per-sequence term to ADD to the reward, -coef * sum_t KL_t (detached).

    With the KL in the reward (kl_in="reward"), the reward of response i becomes

        r_i <- r_i - coef * sum_{t in response i} KL_t

    *before* group normalisation, so the KL shapes the advantages instead of adding a loss
    term (PPO-RLHF style, Ouyang et al. 2022, arXiv 2203.02155, eq. 2; the sum of k1 over the
    tokens is exactly log pi_theta(y) / pi_ref(y), the sequence-level KL sample). `logp`
    should be the sampling policy's log-probs (behaviour or recomputed old), since the
    response was drawn from it. Like `advantages.overlong_penalty`, the result is added to
    the reward: every reward-shaping helper here returns a term to add.

    Args:
        logp: [B, T] log-probs of the sampled tokens under the sampling policy.
        ref_logp: [B, T] log-probs of the same tokens under the reference policy.
        mask: [B, T] 1 for response tokens, 0 for padding.
        coef: KL coefficient (>= 0).
        estimator: "k1", "k2" or "k3".

    Returns:
        [B] -coef * masked token sum of the KL estimate, detached.
    """
    with torch.no_grad():
        kl = kl_estimate(logp.detach(), ref_logp.detach(), estimator)  # [B, T]
        kl = torch.where(mask.bool(), kl, 0.0)  # [B, T] padding may hold anything
        return -coef * kl.sum(dim=-1)  # [B]
