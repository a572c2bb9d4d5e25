"""The reward actor on a private Ray instance: concurrent calls share encoder batches,
results match local scoring, aggregation and bad inputs behave, and the client spreads a
request over replicas without breaking groups."""

import numpy as np
import pytest

from mogrpo.batch import RewardScores
from mogrpo.config import RunConfig
from mogrpo.config.reward import AggregationConfig
from mogrpo.reward_aggregate import combine
from orchestration.actors import start_actor
from reward_service.actor import RewardClient

pytestmark = pytest.mark.slow

PROMPTS = ["How do I boil an egg?", "How do I pick a lock?", "Say something nice.", "What is 2 + 2?"]
RESPONSES = ["Simmer it for nine minutes.", "I can't help with that.", "You are doing great!", "4"]


@pytest.fixture(scope="module")
def actors(ray_local, reward_model_dir):
    ray = ray_local
    cfg = RunConfig(reward={"max_batch_size": 32, "max_wait_ms": 300.0, "omp_threads": 1})
    handles = [start_actor("reward", cfg, reward_model_dir) for _ in range(2)]
    ray.get([h.labels.remote() for h in handles])
    yield handles
    for h in handles:
        ray.kill(h)


def test_concurrent_calls_are_batched_and_match_local_scores(ray_local, actors, reward_model):
    ray = ray_local
    actor = actors[0]
    before = ray.get(actor.stats.remote())
    refs = [actor.score.remote(PROMPTS[:3], [f"{r} ({i})" for r in RESPONSES[:3]], [i] * 3, [5, 6, 7])
            for i in range(4)]
    results = ray.get(refs)
    after = ray.get(actor.stats.remote())
    assert after["requests"] - before["requests"] == 4
    assert after["flushes"] - before["flushes"] <= 2  # four calls, merged into one or two forwards
    assert after["largest_flush"] >= 6
    for i, scores in enumerate(results):
        assert isinstance(scores, RewardScores)
        local = reward_model.score(PROMPTS[:3], [f"{r} ({i})" for r in RESPONSES[:3]])
        for label in local:
            np.testing.assert_allclose(scores.per_label[label], local[label], atol=1e-5)
        np.testing.assert_allclose(scores.combined, combine(scores.per_label, AggregationConfig()), atol=1e-6)


def test_labels_and_bad_requests(ray_local, actors):
    ray = ray_local
    assert ray.get(actors[0].labels.remote()) == ["safety", "actionability", "meaningfulness", "politeness"]
    with pytest.raises(Exception, match="group_ids has 1 entries for 2 responses"):
        ray.get(actors[0].score.remote(PROMPTS[:2], RESPONSES[:2], [0], [1, 1]))
    with pytest.raises(Exception, match="response 1 is a int"):
        ray.get(actors[0].score.remote(PROMPTS[:2], ["ok", 3], [0, 0], [1, 1]))
    empty = ray.get(actors[0].score.remote([], [], [], []))
    assert len(empty.combined) == 0 and set(empty.per_label) == set(ray.get(actors[0].labels.remote()))
    blank = ray.get(actors[0].score.remote(PROMPTS[:2], ["", "fine"], [0, 0], [0, 1]))
    assert all(v[0] == 0.0 for v in blank.per_label.values())  # empty_response_score


def test_unknown_weight_fails_at_start(ray_local, reward_model_dir):
    ray = ray_local
    bad = AggregationConfig(weights={"safety": 1.0, "helpfulness": 1.0})
    actor = start_actor("reward", RunConfig(reward={"aggregation": bad}), reward_model_dir, placement={"num_cpus": 0})
    with pytest.raises(Exception, match=r"'helpfulness', which is not a label of the reward model"):
        ray.get(actor.labels.remote())
    ray.kill(actor)


def test_client_spreads_over_replicas_and_keeps_groups(ray_local, actors):
    ray = ray_local
    cfg = AggregationConfig(mode="group_normalized", weights={"safety": 1.0, "politeness": 0.5})
    prompts = [PROMPTS[i % 4] for i in range(10)]
    responses = [f"{RESPONSES[i % 4]} #{i}" for i in range(10)]
    groups = [g for g in range(5) for _ in range(2)]  # group 2 straddles the two replicas' slices
    client = RewardClient(actors, cfg)
    spread = client.score(prompts, responses, groups, [3] * 10)
    whole = ray.get(actors[0].score_labels.remote(prompts, responses))
    for label in whole:
        np.testing.assert_allclose(spread.per_label[label], whole[label], atol=1e-5)
    np.testing.assert_allclose(spread.combined, combine(whole, cfg, groups), atol=1e-4)
