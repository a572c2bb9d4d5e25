"""Group-relative advantages, DAPO dynamic-sampling filter and soft overlong penalty, on hand numbers."""

from __future__ import annotations

import math

import pytest
import torch

from learner.advantages import (group_advantages, informative_groups, overlong_penalty, trained_rows,
                                weight_written_push_down)


def test_std_scale_one_group():
    # rewards [1, 2, 3]: mean 2, centred [-1, 0, 1];
    # sample variance (1 + 0 + 1) / (3 - 1) = 1, std 1 -> A = [-1, 0, 1] / (1 + 1e-4)
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 0]), group_size=3)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0]) / 1.0001)


def test_sample_std_not_population_std():
    # rewards [0, 1]: centred [-0.5, 0.5]; sample std sqrt(0.5 / 1) = 0.7071 -> A = -+0.7071
    # (the population std, 0.5, would give -+1)
    adv = group_advantages(torch.tensor([0.0, 1.0]), torch.tensor([4, 4]), group_size=2, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0]) / math.sqrt(2))


def test_non_adjacent_groups():
    # group 7 = rows 0, 2: rewards [1, 3], mean 2, centred [-1, 1], std sqrt(2)     -> -+1/sqrt(2)
    # group 9 = rows 1, 3: rewards [10, 30], mean 20, centred [-10, 10], std 10 sqrt(2) -> -+1/sqrt(2)
    rewards = torch.tensor([1.0, 10.0, 3.0, 30.0])
    adv = group_advantages(rewards, torch.tensor([7, 9, 7, 9]), group_size=2, eps=0.0)
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(adv, torch.tensor([-r, -r, r, r]))


def test_scale_none_only_centres():
    # Dr. GRPO: group 0 [1, 3] -> [-1, 1]; group 1 [10, 30] -> [-10, 10]
    rewards = torch.tensor([1.0, 10.0, 3.0, 30.0])
    adv = group_advantages(rewards, torch.tensor([0, 1, 0, 1]), group_size=2, scale="none")
    torch.testing.assert_close(adv, torch.tensor([-1.0, -10.0, 1.0, 10.0]))


@pytest.mark.parametrize("scale", ["std", "none"])
def test_equal_rewards_give_exactly_zero(scale):
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004 in float64, so mean - 0.1 is one ulp, not 0;
    # the equal group must still come out exactly 0, the other group untouched
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 0.5, 1.0], dtype=torch.float64)
    adv = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), group_size=3, scale=scale)
    assert torch.equal(adv[:3], torch.zeros(3, dtype=torch.float64))
    assert adv.dtype == torch.float64
    assert (adv[3:] != 0).sum() == 2  # [-, 0, +]


def test_matches_per_group_torch_std_in_any_row_order():
    torch.manual_seed(0)
    rewards = torch.rand(12, dtype=torch.float64)  # 3 groups of 4
    group_ids = torch.tensor([5, 1, 8, 1, 5, 8, 8, 1, 5, 1, 8, 5])
    adv = group_advantages(rewards, group_ids, group_size=4, eps=1e-4)
    for g in (1, 5, 8):
        rows = group_ids == g
        r = rewards[rows]
        torch.testing.assert_close(adv[rows], (r - r.mean()) / (r.std() + 1e-4))  # torch.std: unbiased


def test_wrong_group_size_names_the_group():
    # group 3 has 2 rows, group 6 has 1 row, group_size 2 -> group 6 is reported with its size
    with pytest.raises(ValueError, match=r"group 6 has 1 responses, expected group_size=2"):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3, 3, 6]), group_size=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.tensor([1.0]), torch.tensor([0]), group_size=1)
    with pytest.raises(ValueError, match="integer"):
        group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), group_size=2)
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0, 0, 0]), group_size=2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), group_size=2, scale="mean")


def test_informative_groups():
    # group 0 [1, 1] equal -> False; group 1 [0, 2] -> True; group 2 [5, 5] equal -> False
    # rows interleaved: ids [2, 0, 1, 0, 2, 1]
    rewards = torch.tensor([5.0, 1.0, 0.0, 1.0, 5.0, 2.0])
    keep = informative_groups(rewards, torch.tensor([2, 0, 1, 0, 2, 1]))
    assert keep.tolist() == [False, False, True, False, False, True]


def test_overlong_penalty_ramp():
    # L_max 10, buffer 4 -> ramp starts after 6 tokens: (6 - len) / 4, times penalty 1
    # len 5 -> 0, 6 -> 0, 7 -> -0.25, 8 -> -0.5, 10 -> -1
    lengths = torch.tensor([5, 6, 7, 8, 10])
    pen = overlong_penalty(lengths, max_new_tokens=10, buffer_tokens=4, penalty=1.0)
    torch.testing.assert_close(pen, torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0]))
    # penalty 0.5 scales it: len 8 -> -0.25
    pen = overlong_penalty(torch.tensor([8]), max_new_tokens=10, buffer_tokens=4, penalty=0.5)
    torch.testing.assert_close(pen, torch.tensor([-0.25]))


def test_overlong_penalty_without_buffer():
    # L_cache 0: nothing the sampler can return (len <= L_max) is penalised; beyond it -penalty
    pen = overlong_penalty(torch.tensor([3, 10, 11]), max_new_tokens=10, buffer_tokens=0, penalty=1.0)
    torch.testing.assert_close(pen, torch.tensor([0.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="buffer_tokens"):
        overlong_penalty(torch.tensor([3]), max_new_tokens=10, buffer_tokens=11, penalty=1.0)


def test_written_rows_train_only_when_the_reward_prefers_them():
    # group 0 (harmful): the written refusal (row 2) tops the samples; group 1 (benign): it is last
    rewards = torch.tensor([-1.0, -0.9, 1.5, 2.0, 2.2, 1.0])
    written = torch.tensor([False, False, True, False, False, True])
    adv = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), group_size=3)
    assert adv[2] > 0 and adv[5] < 0
    unlikely = torch.tensor([-3.0, -2.0, -4.0, -1.0, -1.0, -3.5])  # mean token log-probs under the policy
    assert trained_rows(adv, written, unlikely, -1.5).tolist() == [True, True, True, True, True, False]
    # the policy would write the benign refusal itself now: it is pushed down
    likely = torch.tensor([-3.0, -2.0, -4.0, -1.0, -1.0, -0.4])
    assert trained_rows(adv, written, likely, -1.5).tolist() == [True] * 6
    # sampled rows count whatever their advantage and likelihood
    assert trained_rows(torch.tensor([-1.0, 0.0]), torch.tensor([False, False]), torch.tensor([-9.0, -9.0]),
                        -1.5).tolist() == [True, True]


def test_written_push_down_is_scaled_and_nothing_else():
    adv = torch.tensor([-1.0, 0.5, 1.5, -1.5, 0.8, -0.2])
    written = torch.tensor([False, False, True, True, False, True])
    # only the written rows with a negative advantage (rows 3 and 5) shrink: -1.5 * 0.25, -0.2 * 0.25
    torch.testing.assert_close(weight_written_push_down(adv, written, 0.25),
                               torch.tensor([-1.0, 0.5, 1.5, -0.375, 0.8, -0.05]))
    torch.testing.assert_close(weight_written_push_down(adv, written, 1.0), adv)
    with pytest.raises(ValueError, match="outside"):
        weight_written_push_down(adv, written, 1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        weight_written_push_down(adv, written[:3], 0.5)
