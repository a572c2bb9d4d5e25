"""Padding a rollout batch, response coordinates, and token-budget micro-batches."""

import numpy as np
import torch

from learner.batching import micro_batches, mini_batches, to_response_coords, to_tensors
from mogrpo.batch import RewardScores, RolloutBatch


def batch():
    rows = [
        dict(group_id=0, prompt_id=0, prompt="a", prompt_token_ids=[1, 2, 3], response="x", response_token_ids=[7, 8],
             response_logprobs=[-0.1, -0.2], finish_reason="stop", policy_version=0),
        dict(group_id=0, prompt_id=0, prompt="a", prompt_token_ids=[1, 2, 3], response="y", response_token_ids=[9],
             response_logprobs=[-0.3], finish_reason="length", policy_version=0),
    ]
    r = np.array([1.0, 0.0], np.float32)
    return RolloutBatch.from_rows(rows).with_rewards(RewardScores({"s": r}, r))


def test_padding_and_masks():
    t = to_tensors(batch())
    # rows: [1 2 3 7 8] and [1 2 3 9 pad]
    assert t.input_ids.tolist() == [[1, 2, 3, 7, 8], [1, 2, 3, 9, 0]]
    assert t.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert t.response_start.tolist() == [3, 3] and t.response_len.tolist() == [2, 1]
    assert t.mask.tolist() == [[1, 1], [1, 0]]
    assert torch.allclose(t.behaviour_logp, torch.tensor([[-0.1, -0.2], [-0.3, 0.0]]))
    assert t.truncated.tolist() == [False, True] and t.rewards.tolist() == [1.0, 0.0]


def test_response_coordinates():
    # position t of a [B, L-1] tensor scores token t+1; the response starts at index 3, so
    # response token j sits at position 2 + j.
    per_position = torch.tensor([[0.0, 0.0, 10.0, 11.0], [0.0, 0.0, 20.0, 0.0]])
    got = to_response_coords(per_position, torch.tensor([3, 3]), width=2)
    assert got.tolist() == [[10.0, 11.0], [20.0, 0.0]]


def test_micro_batches_respect_the_token_budget():
    lengths = torch.tensor([10, 40, 20, 30, 5])
    parts = micro_batches(torch.arange(5), lengths, token_budget=60)
    # sorted by length: 40, 30, 20, 10, 5 -> [40] (40+30 padded = 80 > 60), [30, 20] (60), [10, 5]
    assert [p.tolist() for p in parts] == [[1], [3, 2], [0, 4]]
    # a row longer than the budget still gets a micro-batch of its own
    assert [p.tolist() for p in micro_batches(torch.arange(2), torch.tensor([100, 1]), 50)] == [[0], [1]]


def test_mini_batches_cover_every_row_once():
    parts = mini_batches(10, 3, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
