"""Loss variants on hand numbers, clipping, padding, micro-batch additivity, finite differences."""

from __future__ import annotations

import math
import types

import pytest
import torch

from learner.logprobs import response_logprobs, response_mask
from learner.losses import (
    LOSS_VARIANTS,
    LossSettings,
    PolicyLossInput,
    accumulate_metrics,
    masked_mean,
    policy_loss,
    truncated_is_weights,
)
from mogrpo.config.learner import LossConfig

F64 = torch.float64
VARIANTS = ["grpo", "dr_grpo", "dapo", "gspo"]


def settings(**kw) -> LossSettings:
    base = dict(clip_eps_low=0.2, clip_eps_high=0.28, kl_coef=0.0, kl_estimator="k3",
                dr_grpo_constant=4, total_sequences=2, total_tokens=5)
    return LossSettings(**{**base, **kw})


def log(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64).log()


# ---------------------------------------------------------------------------------------------
# registry and records


def test_registry_holds_each_variant_with_its_advantage_scale():
    assert {k: v.advantage_scale for k, v in LOSS_VARIANTS.items()} == {
        "grpo": "std", "dr_grpo": "none", "dapo": "std", "gspo": "std"}
    assert LossConfig().variant in LOSS_VARIANTS


def test_unknown_variant_and_missing_reference():
    inp = PolicyLossInput(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), torch.ones(1, 2))
    with pytest.raises(ValueError, match="unknown loss variant 'ppo'"):
        policy_loss("ppo", inp, settings())
    with pytest.raises(ValueError, match="needs ref_logp"):
        policy_loss("grpo", inp, settings(kl_coef=0.1))


def test_records_check_shapes_and_ranges():
    with pytest.raises(ValueError, match="old_logp"):
        PolicyLossInput(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="advantages"):
        PolicyLossInput(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="total_tokens"):
        settings(total_tokens=0)
    with pytest.raises(ValueError, match="clip_eps_low"):  # the knobs: checked once, by the config
        LossConfig(clip_eps_low=1.0)


def test_masked_mean():
    # [1, 2, (9)] and [(9), (9), (9)]: row means 1.5 and 0 (nothing kept); overall (1 + 2) / 2
    values = torch.tensor([[1.0, 2.0, 9.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(masked_mean(values, mask), torch.tensor(1.5))


# ---------------------------------------------------------------------------------------------
# clipping


# One token per row (T = 1), old_logp = 0 so rho = exp(logp); eps_low 0.2, eps_high 0.28.
#   row  rho   A    rho*A   clip(rho)*A   loss = -min(.)   clipped?
#   0    1.5   +1   1.5     1.28          -1.28            high (no gradient)
#   1    1.5   -1   -1.5    -1.28          1.5             no   (d/dlogp = -rho*A = 1.5)
#   2    0.5   +1   0.5     0.8           -0.5             no   (d/dlogp = -0.5)
#   3    0.5   -1   -0.5    -0.8           0.8             low  (no gradient)
#   4    1.25  +1   1.25    1.25          -1.25            no   (1.25 < 1.28: clip-higher lets it through)
#   5    0.75  -1   -0.75   -0.8           0.8             low  (0.75 < 0.8; same |rho - 1| as row 4)
# sum = -1.28 + 1.5 - 0.5 + 0.8 - 1.25 + 0.8 = 0.07; six sequences / six tokens -> 0.07 / 6
CLIP_RHO = [1.5, 1.5, 0.5, 0.5, 1.25, 0.75]
CLIP_ADV = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_clipping_both_sides(variant):
    # with one token per row, every variant reduces to the same numbers (GSPO's ratio = rho)
    logp = log([[r] for r in CLIP_RHO]).requires_grad_()
    inp = PolicyLossInput(logp, torch.zeros(6, 1, dtype=F64), torch.tensor(CLIP_ADV, dtype=F64),
                          torch.ones(6, 1))
    s = settings(total_sequences=6, total_tokens=6, dr_grpo_constant=1)
    loss, m = policy_loss(variant, inp, s)
    torch.testing.assert_close(loss, torch.tensor(0.07 / 6, dtype=F64))
    torch.testing.assert_close(m["clip_frac"], torch.tensor(3 / 6, dtype=F64))
    torch.testing.assert_close(m["clip_frac_low"], torch.tensor(2 / 6, dtype=F64))
    torch.testing.assert_close(m["clip_frac_high"], torch.tensor(1 / 6, dtype=F64))
    torch.testing.assert_close(m["ratio_max"], torch.tensor(1.5, dtype=F64))
    loss.backward()
    expected_grad = torch.tensor([[0.0], [1.5], [-0.5], [0.0], [-1.25], [0.0]], dtype=F64) / 6
    torch.testing.assert_close(logp.grad, expected_grad)


# ---------------------------------------------------------------------------------------------
# every variant on one hand-computed micro-batch


# Two rows, T = 3, row 1 padded after 2 tokens; old_logp = 0, no clipping, no KL.
#   rho row 0 = [1.1, 0.9, 1.0], A_0 = +1 -> token loss -rho*A = [-1.1, -0.9, -1.0], sum -3.0
#   rho row 1 = [1.2, 1.0, pad], A_1 = -2 -> token loss            [ 2.4,  2.0],      sum  4.4
HAND_RHO = [[1.1, 0.9, 1.0], [1.2, 1.0, 1.0]]
HAND_ADV = [1.0, -2.0]
HAND_MASK = [[1, 1, 1], [1, 1, 0]]
HAND_EXPECTED = {
    # per-sequence means -1.0 and 2.2, over 2 sequences
    "grpo": (-1.0 + 2.2) / 2,  # 0.6
    # row sums / C = 4, over 2 sequences
    "dr_grpo": (-3.0 + 4.4) / 4 / 2,  # 0.175
    # all 5 tokens weigh the same
    "dapo": (-3.0 + 4.4) / 5,  # 0.28
    # s_0 = (1.1 * 0.9 * 1.0)^(1/3) = 0.99^(1/3) = 0.996655, s_1 = (1.2 * 1.0)^(1/2) = 1.095445;
    # every token of a row has ratio s_i: row losses -s_0 * 1 and -s_1 * -2 = 2.190890
    "gspo": (-(0.99 ** (1 / 3)) + 2 * 1.2**0.5) / 2,  # 0.597117
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_hand_values(variant):
    inp = PolicyLossInput(log(HAND_RHO), torch.zeros(2, 3, dtype=F64), torch.tensor(HAND_ADV, dtype=F64),
                          torch.tensor(HAND_MASK))
    loss, m = policy_loss(variant, inp, settings())
    torch.testing.assert_close(loss, torch.tensor(HAND_EXPECTED[variant], dtype=F64))
    torch.testing.assert_close(m["pg_loss"], loss)  # no KL
    assert m["clip_frac"] == 0 and m["kl"] == 0 and m["is_weight_mean"] == 1.0


def test_gspo_clips_whole_sequences():
    # A = -1 and s = (0.5 * 0.8)^(1/2) = sqrt(0.4) = 0.632 < 0.8: both tokens are clipped (2 of 2),
    # though token 1's own ratio 0.8 is not; loss = -clip(s) * A = 0.8 per token, no gradient
    logp = log([[0.5, 0.8]]).requires_grad_()
    inp = PolicyLossInput(logp, torch.zeros(1, 2, dtype=F64), torch.tensor([-1.0], dtype=F64), torch.ones(1, 2))
    loss, m = policy_loss("gspo", inp, settings(total_sequences=1, total_tokens=2))
    torch.testing.assert_close(loss, torch.tensor(0.8, dtype=F64))
    torch.testing.assert_close(m["clip_frac_low"], torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(m["ratio_mean"], torch.tensor(math.sqrt(0.4), dtype=F64))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.zeros(1, 2, dtype=F64))


def test_gspo_token_form_has_the_sequence_gradient():
    # GSPO-token's value and gradient equal those of the sequence objective
    #   L = sum_i -min(s_i A_i, clip(s_i) A_i) / total_sequences,  s_i = exp(mean_t log rho_it)
    torch.manual_seed(0)
    logp = (torch.randn(4, 5, dtype=F64) * 0.3).requires_grad_()
    old = torch.randn(4, 5, dtype=F64) * 0.3
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    s = settings(clip_eps_low=0.1, clip_eps_high=0.1, total_sequences=4, total_tokens=11)
    loss, _ = policy_loss("gspo", PolicyLossInput(logp, old, adv, mask), s)
    (grad,) = torch.autograd.grad(loss, logp)

    seq = torch.exp(((logp - old) * mask).sum(1) / mask.sum(1))  # [B] s_i
    direct = -torch.minimum(seq * adv, seq.clamp(0.9, 1.1) * adv).sum() / 4
    (direct_grad,) = torch.autograd.grad(direct, logp)
    assert ((seq < 0.9) | (seq > 1.1)).any() and ((seq > 0.9) & (seq < 1.1)).any()  # both regimes hit
    torch.testing.assert_close(loss, direct)
    torch.testing.assert_close(grad, direct_grad)


# ---------------------------------------------------------------------------------------------
# KL term and importance weights


# One row, 2 tokens, rho = 1 and A = 0 (no policy gradient); log_ratio = ref - logp = [-0.5, 1.0]
#   k3 = [exp(-0.5) + 0.5 - 1, e - 1 - 1] = [0.1065307, 0.7182818]; mean 0.4124062, sum 0.8248125
K3 = [math.exp(-0.5) - 0.5, math.e - 2]


@pytest.mark.parametrize("variant, expected", [
    ("grpo", 0.1 * sum(K3) / 2),  # beta * mean over the sequence's tokens
    ("dr_grpo", 0.1 * sum(K3) / 4),  # beta * sum / C (C = 4)
    ("dapo", 0.1 * sum(K3) / 2),  # beta * sum / total_tokens
    ("gspo", 0.1 * sum(K3) / 2),
])
def test_kl_in_loss(variant, expected):
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    inp = PolicyLossInput(logp, logp.clone(), torch.zeros(1, dtype=F64), torch.ones(1, 2),
                          ref_logp=torch.tensor([[-1.5, -1.0]], dtype=F64))
    loss, m = policy_loss(variant, inp, settings(kl_coef=0.1, total_sequences=1, total_tokens=2))
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(m["kl"], torch.tensor(sum(K3) / 2, dtype=F64))  # per token
    assert m["pg_loss"] == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_kl_rows_leave_a_written_rows_kl_out_even_where_it_would_overflow(variant):
    # Row 0 as in test_kl_in_loss; row 1 (a written refusal the policy gives ~e^-800 and the
    # reference e^-1): k3 = exp(799) - ... overflows to inf. With kl_rows = [True, False] the
    # loss is row 0's KL alone (row 1 contributes 0, and no NaN reaches any gradient).
    logp = torch.tensor([[-1.0, -2.0], [-800.0, -800.0]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0], [-1.0, -1.0]], dtype=F64)
    kw = dict(ref_logp=ref, kl_rows=torch.tensor([True, False]))
    inp = PolicyLossInput(logp, logp.detach(), torch.zeros(2, dtype=F64), torch.ones(2, 2), **kw)
    loss, m = policy_loss(variant, inp, settings(kl_coef=0.1, total_sequences=2, total_tokens=4))
    row0 = {"grpo": sum(K3) / 2 / 2, "dr_grpo": sum(K3) / 4 / 2, "dapo": sum(K3) / 4, "gspo": sum(K3) / 2 / 2}
    torch.testing.assert_close(loss, torch.tensor(0.1 * row0[variant], dtype=F64))
    torch.testing.assert_close(m["kl"], torch.tensor(sum(K3) / 4, dtype=F64))  # per token of the 4
    loss.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[1] == 0).all() and (logp.grad[0] != 0).all()
    # without kl_rows the same batch's KL is inf: what a written row does to the k3 estimator
    inp = PolicyLossInput(logp, logp.detach(), torch.zeros(2, dtype=F64), torch.ones(2, 2), ref_logp=ref)
    assert policy_loss(variant, inp, settings(kl_coef=0.1, total_sequences=2, total_tokens=4))[0].isinf()
    with pytest.raises(ValueError, match=r"kl_rows has shape \[3\], expected \[2\]"):
        PolicyLossInput(logp, logp.detach(), torch.zeros(2, dtype=F64), torch.ones(2, 2), kl_rows=torch.ones(3, dtype=torch.bool))


def test_truncated_is_weights():
    # exp(old - behaviour) = [0.5, 1.5, 3.0] -> cap 2 -> [0.5, 1.5, 2.0], no grad
    old = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    w = truncated_is_weights(old, -log([[0.5, 1.5, 3.0]]), cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[0.5, 1.5, 2.0]], dtype=F64))
    assert not w.requires_grad


def test_is_weights_scale_policy_gradient_not_kl():
    # rho = 1, A = 1, w = [0.5, 1.5] -> pg tokens [-0.5, -1.5], mean -1.0;
    # KL (k3, beta 0.1) is not weighted: + 0.1 * 0.4124062
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64, requires_grad=True)
    inp = PolicyLossInput(logp, logp.detach(), torch.ones(1, dtype=F64), torch.ones(1, 2),
                          ref_logp=torch.tensor([[-1.5, -1.0]], dtype=F64),
                          is_weights=torch.tensor([[0.5, 1.5]], dtype=F64))
    loss, m = policy_loss("grpo", inp, settings(kl_coef=0.1, total_sequences=1, total_tokens=2))
    torch.testing.assert_close(loss, torch.tensor(-1.0 + 0.1 * sum(K3) / 2, dtype=F64))
    torch.testing.assert_close(m["pg_loss"], torch.tensor(-1.0, dtype=F64))
    torch.testing.assert_close(m["is_weight_mean"], torch.tensor(1.0, dtype=F64))


def test_gspo_is_weight_is_per_sequence():
    # rho = 1, A = 1, token weights [0.5, 2.0]: the sequence weight is their geometric mean
    # sqrt(0.5 * 2.0) = 1, so the loss is -1 as without weights (GRPO would give -1.25)
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    inp = PolicyLossInput(logp, logp.clone(), torch.ones(1, dtype=F64), torch.ones(1, 2),
                          is_weights=torch.tensor([[0.5, 2.0]], dtype=F64))
    s = settings(total_sequences=1, total_tokens=2)
    loss, m = policy_loss("gspo", inp, s)
    torch.testing.assert_close(loss, torch.tensor(-1.0, dtype=F64))
    torch.testing.assert_close(m["is_weight_mean"], torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(policy_loss("grpo", inp, s)[0], torch.tensor(-1.25, dtype=F64))


# ---------------------------------------------------------------------------------------------
# padding, micro-batches


def random_batch(seed: int, rows: int = 6, width: int = 7):
    """Rows of lengths 1..width (one fully masked, as a filtered row is), random values."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 0, 5, 1, 6])[:rows]
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()  # [B, T]
    logp = -torch.rand(rows, width, generator=g, dtype=F64) * 2  # [B, T]
    old = logp + torch.randn(rows, width, generator=g, dtype=F64) * 0.3  # some tokens clipped
    ref = logp + torch.randn(rows, width, generator=g, dtype=F64) * 0.3
    adv = torch.randn(rows, generator=g, dtype=F64)
    w = truncated_is_weights(logp, old + torch.randn(rows, width, generator=g, dtype=F64) * 0.1, cap=2.0)
    return logp, old, ref, adv, mask, w


def totals(mask: torch.Tensor) -> dict:
    return dict(total_sequences=int((mask.sum(1) > 0).sum()), total_tokens=int(mask.sum()))


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_values_change_nothing(variant):
    logp, old, ref, adv, mask, w = random_batch(0)
    s = settings(kl_coef=0.05, dr_grpo_constant=8, **totals(mask))

    def run(pad_value):
        pad = ~mask.bool()
        leaf = logp.clone().masked_fill(pad, pad_value).requires_grad_()
        inp = PolicyLossInput(leaf, old.masked_fill(pad, -pad_value), adv, mask,
                              ref.masked_fill(pad, pad_value), w.masked_fill(pad, pad_value))
        loss, m = policy_loss(variant, inp, s)
        loss.backward()
        return loss, m, leaf.grad

    loss, m, grad = run(0.0)
    for pad_value in (float("nan"), float("inf"), 1e4):
        loss2, m2, grad2 = run(pad_value)
        torch.testing.assert_close(loss2, loss)
        torch.testing.assert_close(grad2, grad)
        for key in m:
            torch.testing.assert_close(m2[key], m[key])
    assert (grad[~mask.bool()] == 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_micro_batches_add_up_to_the_mini_batch(variant):
    # the mini-batch's denominators make micro-batch losses, gradients and metrics additive;
    # each micro-batch is trimmed to its own longest row, as a token-budget packer does
    logp, old, ref, adv, mask, w = random_batch(1)
    s = settings(kl_coef=0.05, dr_grpo_constant=8, **totals(mask))

    def run(rows_list):
        leaf = logp.clone().requires_grad_()
        total, metrics = 0.0, []
        for rows in rows_list:
            width = max(int(mask[rows].sum(1).max()), 1)
            cut = lambda x: x[rows, :width]  # noqa: E731
            loss, m = policy_loss(variant, PolicyLossInput(cut(leaf), cut(old), adv[rows], cut(mask),
                                                           cut(ref), cut(w)), s)
            loss.backward()  # gradient accumulation
            total, metrics = total + loss.detach(), metrics + [m]
        return total, leaf.grad, accumulate_metrics(metrics)

    full_loss, full_grad, full_m = run([slice(0, 6)])
    micro_loss, micro_grad, micro_m = run([slice(0, 2), slice(2, 3), slice(3, 6)])
    torch.testing.assert_close(micro_loss, full_loss)
    torch.testing.assert_close(micro_grad, full_grad)
    assert full_m["clip_frac"] > 0  # the example exercises clipping
    assert micro_m == pytest.approx(full_m, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_data_parallel_ranks_average_to_the_mini_batch(variant):
    # two ranks hold 2 and 4 rows; DeepSpeed averages their gradients. Dividing by the global
    # totals / world size (fractional here: 5 sequences / 2) makes the average exact.
    logp, old, ref, adv, mask, w = random_batch(1)
    s_full = settings(kl_coef=0.05, dr_grpo_constant=8, **totals(mask))
    world = {k: v / 2 for k, v in totals(mask).items()}
    s_rank = settings(kl_coef=0.05, dr_grpo_constant=8, **world)

    def loss_of(rows, s):
        cut = lambda x: x[rows]  # noqa: E731
        return policy_loss(variant, PolicyLossInput(cut(logp), cut(old), adv[rows], cut(mask), cut(ref), cut(w)), s)[0]

    average = (loss_of(slice(0, 2), s_rank) + loss_of(slice(2, 6), s_rank)) / 2
    torch.testing.assert_close(average, loss_of(slice(0, 6), s_full))


# ---------------------------------------------------------------------------------------------
# gradient of the whole path against finite differences on a tiny model


class TinyCausalLM(torch.nn.Module):
    """One-block causal LM, float64 throughout (a transformers Llama upcasts to float32 in its
    RMSNorm, whose rounding would swamp a finite difference). Same call contract as an HF LM."""

    def __init__(self, vocab: int = 32, dim: int = 8, max_len: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.pos = torch.nn.Embedding(vocab, dim), torch.nn.Embedding(max_len, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.Tanh(), torch.nn.Linear(2 * dim, dim))
        self.lm_head = torch.nn.Linear(dim, vocab)
        self.to(F64)

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):
        x = self.embed(input_ids) + self.pos(position_ids)  # [B, L, D]
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, L, D] each
        length = input_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()  # [L, L]
        allowed = causal[None] & attention_mask[:, None, :].bool()  # [B, L, L]
        scores = (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).masked_fill(~allowed, -torch.inf)  # [B, L, L]
        x = x + scores.softmax(-1) @ v  # [B, L, D]
        x = x + self.mlp(x)  # [B, L, D]
        return types.SimpleNamespace(logits=self.lm_head(x[:, -logits_to_keep:]))  # [B, K, V]


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_gradient_matches_finite_differences(variant):
    # prompt + response rows, right-padded: prompts of 2 and 3 tokens, responses of 4 and 2
    model = TinyCausalLM()
    input_ids = torch.tensor([[5, 9, 1, 2, 3, 4, 0], [7, 8, 6, 11, 12, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0]])
    start = torch.tensor([2, 3])
    mask = response_mask(attention_mask, start)  # [2, 6]
    with torch.no_grad():
        logp0 = response_logprobs(model, input_ids, attention_mask, start)
    g = torch.Generator().manual_seed(2)
    old = logp0 + torch.randn(logp0.shape, generator=g, dtype=F64) * 0.3
    ref = logp0 + torch.randn(logp0.shape, generator=g, dtype=F64) * 0.3
    w = truncated_is_weights(old, old + torch.randn(logp0.shape, generator=g, dtype=F64) * 0.2, cap=1.5)
    adv = torch.tensor([0.7, -1.3], dtype=F64)
    s = settings(clip_eps_low=0.1, clip_eps_high=0.15, kl_coef=0.1, dr_grpo_constant=8, **totals(mask))

    def loss_fn():
        logp = response_logprobs(model, input_ids, attention_mask, start, temperature=0.8)
        return policy_loss(variant, PolicyLossInput(logp, old, adv, mask, ref, w), s)[0]

    loss_fn().backward()
    h = 1e-6
    for name, index in [("embed.weight", (9, 3)), ("pos.weight", (4, 1)), ("qkv.weight", (4, 7)),
                        ("mlp.0.weight", (2, 5)), ("lm_head.weight", (3, 6))]:
        param = model.get_parameter(name)
        analytic = param.grad[index].item()
        with torch.no_grad():
            param[index] += h
            up = loss_fn().item()
            param[index] -= 2 * h
            down = loss_fn().item()
            param[index] += h
        numeric = (up - down) / (2 * h)
        assert abs(numeric) > 1e-6, name  # the weight matters
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-10), name
