"""The reward actor (one reward model, batched scoring) and a client spreading requests
over replicas. Thin: scoring is `RewardModel.score`, batching is `Batcher`, combining is
`aggregate.combine`.

    Actor = ray.remote(num_cpus=1)(RewardActor)
    actor = Actor.remote("runs/reward-model", cfg.reward)
    scores = ray.get(actor.score.remote(prompts, responses, group_ids, response_lengths))

`score` is a coroutine, so Ray runs this as an async actor: concurrent calls wait
together in the batcher and share encoder forwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mogrpo.batch import RewardScores
from mogrpo.config.reward import AggregationConfig, RewardConfig
from mogrpo.reward_aggregate import check_aggregation, combine
from reward_service.batching import Batcher
from mogrpo.reward_model import RewardModelError, check_pairs, load_reward_model, read_labels

log = logging.getLogger(__name__)


def as_aggregation(aggregation: AggregationConfig | dict | None) -> AggregationConfig:
    if aggregation is None:
        return AggregationConfig()
    if isinstance(aggregation, AggregationConfig):
        return aggregation
    return AggregationConfig.model_validate(aggregation)


def check_model_aggregation(model_path: str, aggregation: AggregationConfig | dict | None) -> list[str]:
    """Before any actor starts: the model folder is a reward model and every weighted label
    is one of its labels. Returns the labels."""
    labels = read_labels(model_path)
    check_aggregation(as_aggregation(aggregation), labels)
    return labels


def check_request(prompts: Sequence[str], responses: Sequence[str], group_ids: Sequence[int] | None,
                  response_lengths: Sequence[int] | None) -> None:
    """Every field has one entry per response, and texts are strings."""
    check_pairs(prompts, responses)
    for name, values in (("group_ids", group_ids), ("response_lengths", response_lengths)):
        if values is not None and len(values) != len(responses):
            raise RewardModelError(f"{name} has {len(values)} entries for {len(responses)} responses")


class RewardActor:
    """Owns one reward model; scores (prompt, response) pairs in merged batches."""

    def __init__(self, model_path: str, cfg: RewardConfig):
        self.aggregation = cfg.aggregation
        check_model_aggregation(model_path, self.aggregation)  # before loading weights: fail fast
        self.model = load_reward_model(model_path, threads=cfg.omp_threads)
        max_batch_size = cfg.max_batch_size
        empty = self.aggregation.empty_response_score

        def scorer(prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
            return self.model.score(prompts, responses, batch_size=max_batch_size, empty_score=empty)

        self.batcher = Batcher(scorer, max_batch_size, cfg.max_wait_ms / 1000.0)
        log.info("reward actor: %s, labels %s, weights %s, mode %s", model_path, self.model.labels,
                 self.aggregation.weights, self.aggregation.mode)

    async def labels(self) -> list[str]:
        return self.model.labels

    async def score_labels(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """Each label's score in [0, 1]: label -> [B] float32."""
        check_pairs(prompts, responses)
        if not responses:
            return {label: np.zeros(0, np.float32) for label in self.model.labels}
        return await self.batcher.submit(list(prompts), list(responses))

    async def score(self, prompts: Sequence[str], responses: Sequence[str], group_ids: Sequence[int] | None = None,
                    response_lengths: Sequence[int] | None = None) -> RewardScores:
        """Per-label scores and the combined reward under the actor's aggregation."""
        check_request(prompts, responses, group_ids, response_lengths)
        per_label = await self.score_labels(prompts, responses)
        return RewardScores(per_label, combine(per_label, self.aggregation, group_ids, response_lengths))

    async def stats(self) -> dict[str, float]:
        """Batching counters and how many pairs were cut to the model's max length."""
        return {**self.batcher.stats(), "pairs_truncated": self.model.pairs_truncated,
                "pairs_encoded": self.model.pairs_seen}


class RewardClient:
    """Spreads one request over reward-actor replicas and reassembles it in order.

    Replicas return per-label scores of contiguous slices; the combined reward is computed
    here over the whole request, so group normalisation always sees whole groups."""

    def __init__(self, actors: Sequence, aggregation: AggregationConfig | dict | None = None):
        if not actors:
            raise ValueError("RewardClient needs at least one reward actor")
        self.actors = list(actors)
        self.aggregation = as_aggregation(aggregation)
        self._labels: list[str] | None = None

    def labels(self) -> list[str]:
        import ray

        if self._labels is None:
            self._labels = ray.get(self.actors[0].labels.remote())
            check_aggregation(self.aggregation, self._labels)
        return self._labels

    def score(self, prompts: Sequence[str], responses: Sequence[str], group_ids: Sequence[int] | None = None,
              response_lengths: Sequence[int] | None = None) -> RewardScores:
        import ray

        check_request(prompts, responses, group_ids, response_lengths)
        labels = self.labels()
        n, k = len(responses), len(self.actors)
        bounds = np.linspace(0, n, min(k, max(n, 1)) + 1).round().astype(int)  # contiguous, near-equal slices
        refs = [a.score_labels.remote(list(prompts[s:e]), list(responses[s:e]))
                for a, s, e in zip(self.actors, bounds[:-1], bounds[1:])]
        parts = ray.get(refs)
        per_label = {label: np.concatenate([p[label] for p in parts]) if parts else np.zeros(0, np.float32)
                     for label in labels}
        return RewardScores(per_label, combine(per_label, self.aggregation, group_ids, response_lengths))
