"""Merge concurrent scoring requests into encoder batches (plain asyncio, no Ray).

A flush starts when `max_batch_size` pairs are waiting, or `max_wait_s` after the first
of them arrived, and takes every waiting request; the scorer then runs forwards of at
most `max_batch_size` pairs (longest first). While a flush runs on the worker thread,
new requests queue up for the next one. Each request gets back exactly its own rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

Scorer = Callable[[list[str], list[str]], dict[str, np.ndarray]]


@dataclass
class _Request:
    prompts: Sequence[str]
    responses: Sequence[str]
    future: asyncio.Future


class Batcher:
    def __init__(self, scorer: Scorer, max_batch_size: int, max_wait_s: float):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_s >= 0, got {max_batch_size}, {max_wait_s}")
        self.scorer, self.max_batch_size, self.max_wait_s = scorer, max_batch_size, max_wait_s
        self._pending: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-forward")
        self.flushes = 0  # scorer calls
        self.requests = 0
        self.pairs = 0
        self.largest_flush = 0  # pairs in the largest scorer call

    def _waiting(self) -> int:
        return sum(len(r.responses) for r in self._pending)

    async def submit(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """Score one request (label -> [len(responses)]) together with whatever else is waiting."""
        if not responses:
            return {}
        loop = asyncio.get_running_loop()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        request = _Request(prompts, responses, loop.create_future())
        self._pending.append(request)
        self._wakeup.set()
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            deadline = loop.time() + self.max_wait_s
            while self._waiting() < self.max_batch_size:  # 1. fill up, or time out
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                self._wakeup.clear()
            batch, self._pending = self._pending, []  # 2. take everything waiting
            prompts = [p for r in batch for p in r.prompts]
            responses = [x for r in batch for x in r.responses]
            try:  # 3. one scorer call on the worker thread; the loop keeps accepting requests
                scores = await loop.run_in_executor(self._executor, self.scorer, prompts, responses)
            except Exception as err:  # every request of the flush sees the error
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(err)
                continue
            self.flushes += 1
            self.requests += len(batch)
            self.pairs += len(responses)
            self.largest_flush = max(self.largest_flush, len(responses))
            start = 0
            for r in batch:  # 4. hand each request its own rows
                end = start + len(r.responses)
                if not r.future.done():
                    r.future.set_result({k: v[start:end] for k, v in scores.items()})
                start = end

    def stats(self) -> dict[str, float]:
        return {"flushes": self.flushes, "requests": self.requests, "pairs": self.pairs,
                "largest_flush": self.largest_flush,
                "mean_flush": self.pairs / self.flushes if self.flushes else 0.0}

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False)
