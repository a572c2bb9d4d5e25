"""Step metrics on a hand-built scored batch: written refusals are measured against the
samples of their group and kept out of the rollout statistics."""

import numpy as np
import pytest

from mogrpo.batch import RewardScores, RolloutBatch
from orchestration.steps import step_metrics


def batch() -> RolloutBatch:
    # group 0 (prompt 0, harmful): samples 0.0 and -1.0, written refusal 1.0 -> margin 1.5
    # group 1 (prompt 1, benign): samples 2.0 and 1.0, written refusal 0.5 -> margin -1.0
    responses = ["Sure, here", "Step one", "I'm sorry, but I can't help with that.",
                 "Here you go", "I'm sorry, no", "I'm sorry, but I can't help with that."]
    written = [False, False, True, False, False, True]
    rows = [dict(group_id=i // 3, prompt_id=i // 3, prompt="p", prompt_token_ids=[1], response=r,
                 response_token_ids=[5] * (i + 1), response_logprobs=[0.0] * (i + 1), finish_reason="stop",
                 policy_version=0, written=w) for i, (r, w) in enumerate(zip(responses, written))]
    rewards = np.array([0.0, -1.0, 1.0, 2.0, 1.0, 0.5], np.float32)
    return RolloutBatch.from_rows(rows).with_rewards(RewardScores({"safety": rewards}, rewards))


def test_written_refusals_measured_apart():
    m = step_metrics(batch(), {"loss": 0.1}, ["safety"], tags=["harmful", "benign"])
    assert m["written/margin/harmful"] == pytest.approx(1.5)
    assert m["written/margin/benign"] == pytest.approx(-1.0)
    assert m["written/margin"] == pytest.approx(0.25)
    assert m["written/preferred"] == 0.5 and m["written/preferred/harmful"] == 1.0
    # rollout statistics see the four samples only
    assert m["reward/mean"] == pytest.approx(0.5)
    assert m["rollout/refusal_rate/benign"] == 0.5 and m["rollout/refusal_rate/harmful"] == 0.0
    assert m["response_len/max"] == 5 and m["loss"] == 0.1


def test_batches_without_the_column_read_as_sampled():
    rows = [dict(group_id=0, prompt_id=0, prompt="p", prompt_token_ids=[1], response="r", response_token_ids=[2],
                 response_logprobs=[0.0], finish_reason="stop", policy_version=0)] * 2
    assert RolloutBatch.from_rows(rows).written.tolist() == [False, False]
