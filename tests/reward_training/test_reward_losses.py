"""Losses on hand-computed numbers (reasoning in the comments)."""

import math

import pytest
import torch

from reward_training.losses import masked_pointwise_loss, pairwise_loss

LN2 = math.log(2.0)
LN3 = math.log(3.0)


def test_masked_bce_per_label_mean_and_mask():
    # Two examples, labels (A, B). Example 0 has no target for B: its placeholder is NaN
    # and must not leak into the loss.
    logits = torch.tensor([[0.0, 5.0], [LN3, 0.0]])
    targets = torch.tensor([[1.0, float("nan")], [0.5, 1.0]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, per_label = masked_pointwise_loss(logits, targets, weights, "bce")
    # BCE(logit 0, target 1) = -log sigmoid(0) = ln 2.
    # BCE(logit ln 3, target 0.5): sigmoid(ln 3) = 3/4, so -(0.5 ln 0.75 + 0.5 ln 0.25) = -0.5 ln(3/16).
    bce_half = -0.5 * math.log(3 / 16)  # 0.8370
    label_a = (LN2 + bce_half) / 2  # both examples carry A
    label_b = LN2  # only example 1 carries B (logit 0, target 1)
    assert per_label.tolist() == pytest.approx([label_a, label_b], rel=1e-6)
    # The loss is the mean over labels, not over entries: A and B count equally.
    assert loss.item() == pytest.approx((label_a + label_b) / 2, rel=1e-6)


def test_masked_loss_example_weights():
    # Weight 2 on example 0 for label A: (2 * ln2 + 1 * 0.8370) / 3.
    logits = torch.tensor([[0.0], [LN3]])
    targets = torch.tensor([[1.0], [0.5]])
    weights = torch.tensor([[2.0], [1.0]])
    loss, _ = masked_pointwise_loss(logits, targets, weights, "bce")
    assert loss.item() == pytest.approx((2 * LN2 - 0.5 * math.log(3 / 16)) / 3, rel=1e-6)


def test_masked_mse_and_absent_label():
    # MSE on the sigmoid: (0.5 - 1)^2 = 0.25 and (0.75 - 0.5)^2 = 0.0625 -> label A 0.15625.
    # Label B is carried by nobody: per-label 0 and left out of the mean.
    logits = torch.tensor([[0.0, 1.0], [LN3, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, per_label = masked_pointwise_loss(logits, targets, weights, "mse")
    assert per_label.tolist() == pytest.approx([0.15625, 0.0])
    assert loss.item() == pytest.approx(0.15625)


def test_masked_loss_all_masked_is_zero_with_grad():
    logits = torch.zeros(2, 2, requires_grad=True)
    loss, _ = masked_pointwise_loss(logits, torch.zeros(2, 2), torch.zeros(2, 2))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph


def test_masked_loss_unknown_kind():
    with pytest.raises(ValueError, match="unknown pointwise loss 'hinge'"):
        masked_pointwise_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), "hinge")


def test_pairwise_bradley_terry():
    # margins = chosen - rejected = [2, 0, -1]
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928; -log sigmoid(0) = ln 2; -log sigmoid(-1) = log(1 + e) = 1.313262
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 0.0])
    loss, acc = pairwise_loss(chosen, rejected)
    expected = (math.log1p(math.exp(-2)) + LN2 + math.log1p(math.e)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == pytest.approx(1 / 3)  # only the first pair is strictly ordered right


def test_pairwise_gradient_pushes_margin_up():
    # d/dm of -log sigmoid(m) = -(1 - sigmoid(m)) = -0.5 at m = 0: chosen goes up, rejected down.
    chosen = torch.zeros(1, requires_grad=True)
    rejected = torch.zeros(1, requires_grad=True)
    loss, _ = pairwise_loss(chosen, rejected)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)
