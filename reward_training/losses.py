"""Training losses of the multi-label reward model: pure tensor functions.

- Graded targets (soft labels in [0, 1]) train with binary cross-entropy on the head's
  logit, which is a proper regression loss for probabilities: its minimum over the
  logit is at sigmoid(logit) = target. Labels an example does not carry are masked.
- Chosen/rejected pairs train one label's head with the Bradley-Terry loss
  -log sigmoid(z_chosen - z_rejected) (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_pointwise_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kind: str = "bce"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label masked regression loss.

    logits, targets, weights: [B, K]. `weights[b, k]` is 0 where example b has no target
    for label k (masked), else the example's weight (1 by default).
    Returns (loss, per_label): `per_label` [K] is each label's weighted mean over the
    examples that carry it (0 where none does); `loss` is the mean over the labels
    present in the batch, so a label with many examples does not drown the others.
    """
    if kind == "bce":
        elem = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, K]
    elif kind == "mse":
        elem = (torch.sigmoid(logits) - targets) ** 2  # [B, K]
    else:
        raise ValueError(f"unknown pointwise loss {kind!r} (expected 'bce' or 'mse')")
    elem = torch.where(weights > 0, elem, torch.zeros_like(elem))  # masked targets may be NaN placeholders
    total = weights.sum(0)  # [K]
    per_label = (elem * weights).sum(0) / total.clamp(min=1e-12)  # [K]
    present = total > 0  # [K]
    if not present.any():
        return logits.sum() * 0.0, per_label
    return per_label[present].mean(), per_label


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry loss on logits chosen, rejected [P]: mean of -log sigmoid(chosen - rejected).
    Returns (loss, accuracy) where accuracy is the share of pairs with chosen > rejected."""
    margin = chosen - rejected  # [P]
    loss = -F.logsigmoid(margin).mean()
    accuracy = (margin > 0).float().mean().detach()
    return loss, accuracy
