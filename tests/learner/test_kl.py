"""KL estimators k1, k2, k3 and the KL-in-reward penalty, on hand numbers."""

from __future__ import annotations

import math

import pytest
import torch

from learner.kl import kl_estimate, kl_reward_penalty

# log_ratio = ref_logp - logp = [-0.5, 1.0, 0.0]
LOGP = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
REF = torch.tensor([[-1.5, -1.0, -0.5]], dtype=torch.float64)


def test_k1():
    # k1 = -log_ratio = [0.5, -1.0, 0.0] (can be negative)
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k1"), torch.tensor([[0.5, -1.0, 0.0]], dtype=torch.float64))


def test_k2():
    # k2 = log_ratio^2 / 2 = [0.125, 0.5, 0.0]
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k2"), torch.tensor([[0.125, 0.5, 0.0]], dtype=torch.float64))


def test_k3():
    # k3 = exp(lr) - lr - 1: exp(-0.5) + 0.5 - 1 = 0.1065307, e - 1 - 1 = 0.7182818, 1 - 0 - 1 = 0
    expected = torch.tensor([[math.exp(-0.5) - 0.5, math.e - 2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k3"), expected)
    torch.testing.assert_close(expected, torch.tensor([[0.1065307, 0.7182818, 0.0]], dtype=torch.float64))


def test_k2_k3_nonnegative():
    torch.manual_seed(0)
    logp, ref = torch.randn(64, 16) * 3, torch.randn(64, 16) * 3
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, ref, "k2") >= 0).all()


def test_unknown_estimator():
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(LOGP, REF, "k4")


def _categoricals():
    torch.manual_seed(1)
    theta = torch.randn(5, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(5, dtype=torch.float64).log_softmax(0)
    return theta, ref


def test_k1_k3_unbiased_exactly():
    # over a categorical, E_{y~pi}[k1(y)] = E_{y~pi}[k3(y)] = KL(pi || ref), exactly
    # (k3: E[ref/pi] = sum ref = 1, so E[k3] = 1 + KL - 1)
    theta, ref = _categoricals()
    logp = theta.detach().log_softmax(0)
    pi = logp.exp()
    kl = (pi * (logp - ref)).sum()
    for est in ("k1", "k3"):
        torch.testing.assert_close((pi * kl_estimate(logp, ref, est)).sum(), kl)


def test_loss_gradients_as_documented():
    # As loss terms with fixed samples, E_{y~pi}[grad k(y)]: k1 -> 0, k2 -> grad KL(pi || ref),
    # k3 -> grad KL(ref || pi) (Tang & Munos 2025), checked exactly by summing over all y.
    theta, ref = _categoricals()

    def expected_grad(est):
        logp = theta.log_softmax(0)
        weights = logp.detach().exp()  # pi(y), the sampling distribution: no gradient
        (g,) = torch.autograd.grad((weights * kl_estimate(logp, ref, est)).sum(), theta)
        return g

    logp = theta.log_softmax(0)
    (reverse,) = torch.autograd.grad((logp.exp() * (logp - ref)).sum(), theta)
    logp = theta.log_softmax(0)
    (forward,) = torch.autograd.grad((ref.exp() * (ref - logp)).sum(), theta)
    torch.testing.assert_close(expected_grad("k1"), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(expected_grad("k2"), reverse)
    torch.testing.assert_close(expected_grad("k3"), forward)


def test_kl_reward_penalty():
    # row 0: k1 = [0.5, -1.0, (pad)] -> sum -0.5 -> -0.1 * -0.5 = +0.05
    # row 1: k1 = [0.3, (pad), (pad)]           -> -0.1 * 0.3 = -0.03
    logp = torch.tensor([[-1.0, -2.0, float("nan")], [-0.4, 7.0, float("inf")]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.7, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pen = kl_reward_penalty(logp, ref, mask, coef=0.1, estimator="k1")
    torch.testing.assert_close(pen, torch.tensor([0.05, -0.03]))
    assert not pen.requires_grad
    # k3 is >= 0, so the reward term is <= 0
    assert (kl_reward_penalty(logp, ref, mask, coef=0.1, estimator="k3") <= 0).all()
