"""The shared rollout-batch record and reward scores."""

import numpy as np
import pytest

from mogrpo.batch import BatchError, RewardScores, RolloutBatch


def make_batch(groups=3, size=2):
    rows = [dict(group_id=g, prompt_id=10 + g, prompt=f"p{g}", prompt_token_ids=[1, 2], response=f"r{g}{k}",
                 response_token_ids=[3] * (k + 1), response_logprobs=[-0.5] * (k + 1), finish_reason="stop",
                 policy_version=0) for g in range(groups) for k in range(size)]
    return RolloutBatch.from_rows(rows)


def test_nan_reward_names_the_sample():
    with pytest.raises(BatchError, match="'safety' is not finite for sample 1"):
        RewardScores({"safety": np.array([0.5, np.nan, 0.2])}, np.array([0.5, 0.1, 0.2]))
    with pytest.raises(BatchError, match="'reward' is not finite for sample 2"):
        RewardScores({"safety": np.array([0.5, 0.1, 0.2])}, np.array([0.5, 0.1, np.inf]))


def test_rewards_attach_as_columns():
    batch = make_batch()
    scored = batch.with_rewards(RewardScores({"safety": np.arange(6) / 10}, np.arange(6, dtype=float)))
    assert scored.label_names() == ["safety"]
    np.testing.assert_allclose(scored.rewards, np.arange(6))
    with pytest.raises(BatchError, match="5 rewards for a batch of 6"):
        batch.with_rewards(RewardScores({"safety": np.zeros(5)}, np.zeros(5)))


def test_split_by_groups_keeps_groups_whole():
    batch = make_batch(groups=4)
    halves = batch.split_by_groups(2)
    assert [h.group_ids.tolist() for h in halves] == [[0, 0, 1, 1], [2, 2, 3, 3]]
    with pytest.raises(BatchError, match="cannot be split evenly"):
        batch.split_by_groups(3)


def test_group_size_check():
    batch = make_batch()
    batch.check_groups(2)
    with pytest.raises(BatchError, match="size other than 3"):
        batch.check_groups(3)


def test_concat_and_missing_columns():
    both = RolloutBatch.concat([make_batch(1), make_batch(2)])
    assert len(both) == 6
    with pytest.raises(BatchError, match="lacks columns"):
        RolloutBatch(make_batch().table.drop(["response_logprobs"]))
