"""The batcher merges concurrent requests, respects max wait and max batch size, and
hands each request exactly its own rows (plain asyncio, no Ray)."""

import asyncio
import time

import numpy as np
import pytest

from reward_service.batching import Batcher


class FakeScorer:
    """Scores a response by its length; records every call."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, prompts, responses):
        self.calls.append(list(responses))
        if self.fail_on in responses:
            raise RuntimeError(f"cannot score {self.fail_on!r}")
        return {"len": np.array([len(r) for r in responses], np.float32),
                "prompt_len": np.array([len(p) for p in prompts], np.float32)}


def test_concurrent_requests_share_one_call_and_get_their_rows():
    scorer = FakeScorer()

    async def main():
        b = Batcher(scorer, max_batch_size=64, max_wait_s=0.2)
        reqs = [(["p"] * 2, ["a", "bb"]), (["pp"], ["ccc"]), (["ppp"] * 3, ["dddd", "e", "ff"])]
        out = await asyncio.gather(*(b.submit(p, r) for p, r in reqs))
        b.close()
        return b, out

    b, out = asyncio.run(main())
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 6  # one forward for all three
    assert out[0]["len"].tolist() == [1, 2] and out[0]["prompt_len"].tolist() == [1, 1]
    assert out[1]["len"].tolist() == [3] and out[1]["prompt_len"].tolist() == [2]
    assert out[2]["len"].tolist() == [4, 1, 2] and out[2]["prompt_len"].tolist() == [3, 3, 3]
    assert b.stats()["requests"] == 3 and b.stats()["largest_flush"] == 6


def test_partial_batch_waits_at_most_max_wait():
    scorer = FakeScorer()

    async def main():
        b = Batcher(scorer, max_batch_size=100, max_wait_s=0.15)
        t = time.perf_counter()
        await b.submit(["p"], ["x"])
        b.close()
        return time.perf_counter() - t

    waited = asyncio.run(main())
    assert 0.14 <= waited < 2.0  # waited for company, then scored alone


def test_full_batch_does_not_wait():
    scorer = FakeScorer()

    async def main():
        b = Batcher(scorer, max_batch_size=2, max_wait_s=30.0)
        t = time.perf_counter()
        await b.submit(["p", "q"], ["x", "y"])
        b.close()
        return time.perf_counter() - t

    assert asyncio.run(main()) < 5.0  # far below max_wait_s


def test_requests_arriving_during_a_flush_form_the_next_batch():
    calls = []

    def slow_scorer(prompts, responses):
        calls.append(list(responses))
        time.sleep(0.2)
        return {"len": np.array([len(r) for r in responses], np.float32)}

    async def main():
        b = Batcher(slow_scorer, max_batch_size=1, max_wait_s=0.0)
        first = asyncio.ensure_future(b.submit(["p"], ["a"]))
        await asyncio.sleep(0.05)  # the first flush is running now
        rest = [b.submit(["p"], [x]) for x in ("bb", "ccc")]
        out = await asyncio.gather(first, *rest)
        b.close()
        return out

    out = asyncio.run(main())
    assert [o["len"].tolist() for o in out] == [[1], [2], [3]]
    assert calls == [["a"], ["bb", "ccc"]]  # the two late requests were merged


def test_scorer_error_reaches_the_requests_and_the_batcher_goes_on():
    scorer = FakeScorer(fail_on="boom")

    async def main():
        b = Batcher(scorer, max_batch_size=64, max_wait_s=0.01)
        with pytest.raises(RuntimeError, match="cannot score 'boom'"):
            await b.submit(["p"], ["boom"])
        ok = await b.submit(["p"], ["fine"])
        b.close()
        return ok

    assert asyncio.run(main())["len"].tolist() == [4]


def test_bad_settings():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        Batcher(FakeScorer(), max_batch_size=0, max_wait_s=0.0)
