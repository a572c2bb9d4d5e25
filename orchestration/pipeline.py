"""The rollout stream: the rollout workers generate groups in chunks, each chunk goes to the
reward replicas as soon as it is done, and scored groups wait in a buffer until the learner
takes a batch. With `rollout.max_staleness: k` the workers keep generating while the learner
trains, for up to k steps ahead; a group older than k versions when its batch is taken is
dropped.

How much may be in flight. A group generated at policy version v is trained at a later
version; it must be trained at v + k at the latest. With the learner's next batch trained at
version `t` (the current version, or one more while it trains), the batches at versions
t .. v + k can take (v + k - t + 1) batches' worth of groups, so that is the most the
stream holds (generating, scoring or buffered). k = 0: one batch, generated only while the
learner waits, which is the synchronous loop.

Chunks go to the worker with the fewest outstanding calls (at most
`rollout.max_chunks_per_worker`), and scored chunks to the reward replica with the fewest, so a
faster worker takes more. Ray runs an actor's calls in order, so a chunk queued before a weight
update runs at the old version and one queued after it at the new one: no response mixes two
versions. A stream that waits on an actor making no progress for its `timeouts.*` fails,
naming the actor and the call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import ray
import torch

from mogrpo.batch import Prompt, RolloutBatch, SamplingSettings
from mogrpo.config import RunConfig
from mogrpo.prompts import PromptSampler
from orchestration.actors import Actors
from orchestration.groups import ActorFailedError

log = logging.getLogger("mogrpo")


@dataclass
class Chunk:
    """Prompts generated in one call; `position` is the sampler position of the first."""

    prompts: list[Prompt]
    position: int
    first_group_id: int
    version: int = 0
    batch: RolloutBatch | None = None  # once generated


@dataclass
class Call:
    kind: str  # "generate" or "score"
    actor: int
    chunk: Chunk
    started: float = field(default_factory=time.monotonic)


@dataclass
class Group:
    version: int
    position: int
    batch: RolloutBatch


class GroupBuffer:
    """Scored groups waiting for the learner, each with the policy version that wrote it."""

    def __init__(self):
        self.groups: list[Group] = []

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, group: Group) -> None:
        self.groups.append(group)

    def drop_older_than(self, version: int) -> int:
        """Drop the groups written before `version`; returns how many."""
        kept = [g for g in self.groups if g.version >= version]
        dropped, self.groups = len(self.groups) - len(kept), kept
        return dropped

    def take(self, n: int) -> list[Group]:
        """The `n` oldest groups (by version, then arrival)."""
        self.groups.sort(key=lambda g: g.version)
        taken, self.groups = self.groups[:n], self.groups[n:]
        return taken

    def positions(self) -> list[int]:
        return [g.position for g in self.groups]


def sampling_settings(cfg: RunConfig, position: int) -> SamplingSettings:
    """Sampling of the chunk whose first prompt is at sampler `position` (the seed follows it,
    so a resumed synchronous run draws the same samples)."""
    r = cfg.rollout
    return SamplingSettings(
        group_size=r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
        top_k=r.top_k, seed=(cfg.seed * 100_003 + position) * 31,
        written_responses=tuple(r.written_refusal_texts) if r.written_refusals else (),
        written_per_group=r.written_refusals,
    )


class RolloutStream:
    """The stream of the module docstring, driven by the driver's loop: `next_batch`,
    `while_training`, `synced`, and `fill` to start the next generation early."""

    def __init__(self, actors: Actors, sampler: PromptSampler, cfg: RunConfig, version: int):
        self.actors, self.sampler, self.cfg = actors, sampler, cfg
        r = cfg.rollout
        self.batch_groups, self.max_staleness = r.prompts_per_step, r.max_staleness
        self.chunk_groups = r.chunk_groups or -(-r.prompts_per_step // r.num_workers)
        self.version, self.training, self.closed = version, False, False
        self.calls: dict[ray.ObjectRef, Call] = {}
        self.retry: list[Chunk] = []  # chunks of workers that died, generated again once they are replaced
        self.buffer = GroupBuffer()
        self.lost: set[int] = set()  # workers whose calls failed because they died
        self.next_group_id = 0
        self.last_progress: dict[tuple[str, int], float] = {}
        self.score_calls = [0] * len(actors.reward.handles)
        self.busy_s = np.zeros(len(actors.rollout.handles))  # seconds each worker had work, this step
        # (time.monotonic(), "issue" | "done", "generate" | "score", actor name, groups) of this step's calls
        self.trace: list[tuple[float, str, str, str, int]] = []
        self.counts = {"dropped_stale": 0, "dropped_uninformative": 0, "groups_scored": 0, "score_s": 0.0}

    # ------------------------------------------------------------------ what the driver calls
    def next_batch(self, version: int) -> tuple[RolloutBatch, dict]:
        """The next batch to train at `version`: `prompts_per_step` groups no older than
        `version - max_staleness` (older ones are dropped), oldest first. With DAPO dynamic
        sampling, uninformative groups never enter the buffer; after drawing
        `1 + dynamic_sampling_max_rounds` batches' worth, the batch is what there is."""
        self.training, self.version = False, version
        loss = self.cfg.learner.loss
        draw_limit = (1 + loss.dynamic_sampling_max_rounds) * self.batch_groups if loss.dynamic_sampling else None
        scored_before = self.counts["groups_scored"]
        while True:
            self.counts["dropped_stale"] += self.buffer.drop_older_than(version - self.max_staleness)
            if len(self.buffer) >= self.batch_groups:
                break
            if draw_limit is not None and self.counts["groups_scored"] - scored_before >= draw_limit:
                break
            self._wait(until=[])
        usable = min(len(self.buffer), self.batch_groups)
        if loss.dynamic_sampling:
            usable = usable // self.cfg.learner.num_workers * self.cfg.learner.num_workers
        taken = self.buffer.take(usable)
        staleness = np.array([version - g.version for g in taken]) if taken else np.zeros(1)
        batch = RolloutBatch.concat([g.batch for g in taken]) if taken else None
        return batch, {"pipeline/staleness_mean": float(staleness.mean()), "pipeline/staleness_max": int(staleness.max()),
                       "pipeline/buffer_groups": len(self.buffer), "pipeline/groups": usable}

    def while_training(self, train_refs: dict[str, ray.ObjectRef]) -> None:
        """Go on generating and scoring (as far as the staleness bound allows) until the learner
        ranks' calls are done (their results stay with the caller), at most `timeouts.train_s`."""
        self.training = True
        refs, deadline = list(train_refs.values()), time.monotonic() + self.cfg.timeouts.train_s
        while self._wait(until=refs) != len(refs):
            if time.monotonic() > deadline:
                ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
                late = [name for name, ref in train_refs.items() if ref not in ready]
                raise ActorFailedError(f"train_step: {', '.join(late)} did not answer within "
                                       f"{self.cfg.timeouts.train_s:g}s (timeouts.train_s)", refs)

    def synced(self, version: int) -> None:
        """The workers hold `version` now (a sync replaced any worker that had died)."""
        self.version, self.lost = version, set()

    def reset(self, version: int) -> None:
        """Forget everything in flight and buffered (the learner went back to a checkpoint)."""
        self.calls, self.retry, self.buffer, self.lost = {}, [], GroupBuffer(), set()
        self.version, self.training = version, False

    def close(self) -> None:
        """Start no more generation (the run is stopping)."""
        self.closed = True

    def resume_position(self) -> int:
        """Where a resumed run should take prompts from: the first prompt not yet trained on
        (groups in flight or buffered are generated again)."""
        held = [c.chunk.position for c in self.calls.values()] + [c.position for c in self.retry]
        held += self.buffer.positions()
        return min([self.sampler.position, *held])

    def step_stats(self, step_s: float) -> dict:
        """Counters since the last call: idle share of the workers, drops, scoring time."""
        idle = 1.0 - float(np.clip(self.busy_s / max(step_s, 1e-9), 0, 1).mean())
        out = {"pipeline/rollout_idle": idle, "pipeline/dropped_stale": self.counts["dropped_stale"],
               "time/reward": self.counts["score_s"]}
        if self.cfg.learner.loss.dynamic_sampling:
            scored = max(self.counts["groups_scored"], 1)
            out |= {"dynamic_sampling/dropped": self.counts["dropped_uninformative"],
                    "dynamic_sampling/informative_frac": 1 - self.counts["dropped_uninformative"] / scored}
        self.busy_s[:] = 0
        self.trace = []
        self.counts = dict.fromkeys(self.counts, 0)
        return out

    # ------------------------------------------------------------------ admission
    def _held_groups(self) -> int:
        return sum(len(c.chunk.prompts) for c in self.calls.values()) + sum(len(c.prompts) for c in self.retry) \
            + len(self.buffer)

    def _allowed_groups(self) -> int:
        next_trained_at = self.version + (1 if self.training else 0)
        return max(0, self.version + self.max_staleness - next_trained_at + 1) * self.batch_groups

    def fill(self) -> None:
        """Hand out chunks while the bound allows and a live worker has room (chunks of
        workers that died first)."""
        if self.lost and not self.training:
            self._replace_lost_workers()
        per_worker = self._outstanding("generate", len(self.actors.rollout.handles))
        room = self._allowed_groups() - self._held_groups()  # for new chunks (retried ones are held already)
        while self.retry or (room > 0 and not self.closed):
            live = [i for i in range(len(per_worker)) if i not in self.lost
                    and per_worker[i] < self.cfg.rollout.max_chunks_per_worker]
            if not live:
                return
            worker = min(live, key=lambda i: per_worker[i])
            if self.retry:
                chunk = self.retry.pop(0)
            else:
                n = min(self.chunk_groups, room)
                chunk = Chunk([], self.sampler.position, self.next_group_id)
                chunk.prompts = self.sampler.take(n)
                self.next_group_id += n
                room -= n
            chunk.version, chunk.batch = self.version, None
            ref = self.actors.rollout.start_chunk(worker, chunk.prompts, sampling_settings(self.cfg, chunk.position),
                                                  chunk.first_group_id, self.version)
            self._issue(ref, Call("generate", worker, chunk), per_worker[worker])
            per_worker[worker] += 1

    def _issue(self, ref: ray.ObjectRef, call: Call, outstanding: int) -> None:
        if outstanding == 0:  # an idle actor's clock starts now
            self.last_progress[(call.kind, call.actor)] = time.monotonic()
        self.calls[ref] = call
        self.trace.append((time.monotonic(), "issue", call.kind, self._name(call.kind, call.actor), len(call.chunk.prompts)))

    def _outstanding(self, kind: str, n: int) -> list[int]:
        counts = [0] * n
        for c in self.calls.values():
            if c.kind == kind:
                counts[c.actor] += 1
        return counts

    # ------------------------------------------------------------------ waiting
    def _wait(self, until: list[ray.ObjectRef]) -> int:
        """Fill, wait for the next call to finish and handle it; returns how many of `until` are done."""
        self.fill()
        if not self.calls and not until:
            raise RuntimeError("the rollout stream has nothing in flight and nothing buffered to wait for")
        t0 = time.monotonic()
        refs = list(self.calls) + list(until)
        done, _ = ray.wait(refs, num_returns=1, timeout=5.0)
        self._count_busy(time.monotonic() - t0)
        for ref in done:
            if ref in self.calls:
                self._finish(ref, self.calls.pop(ref))
        self._check_progress()
        return len(ray.wait(list(until), num_returns=len(until), timeout=0)[0]) if until else 0

    def _count_busy(self, seconds: float) -> None:
        for worker in {c.actor for c in self.calls.values() if c.kind == "generate"}:
            self.busy_s[worker] += seconds

    def _check_progress(self) -> None:
        timeouts = self.cfg.timeouts
        now = time.monotonic()
        for kind, actor in {(c.kind, c.actor) for c in self.calls.values()}:
            limit = timeouts.generate_s if kind == "generate" else timeouts.score_s
            if now - self.last_progress.get((kind, actor), now) > limit:
                name = self._name(kind, actor)
                raise ActorFailedError(f"{kind}: {name} did not answer within {limit:g}s (timeouts."
                                       f"{'generate_s' if kind == 'generate' else 'score_s'})",
                                       [r for r, c in self.calls.items() if c.actor == actor and c.kind == kind])

    def _name(self, kind: str, actor: int) -> str:
        return (self.actors.rollout if kind == "generate" else self.actors.reward).names[actor]

    def _finish(self, ref: ray.ObjectRef, call: Call) -> None:
        self.last_progress[(call.kind, call.actor)] = time.monotonic()
        name = self._name(call.kind, call.actor)
        self.trace.append((time.monotonic(), "done", call.kind, name, len(call.chunk.prompts)))
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as err:  # the actor died: do the chunk again elsewhere
            if call.kind == "generate":
                log.warning("%s died while generating (%s); its chunks will be generated again", name,
                            str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
                self.lost.add(call.actor)
                self.retry.append(call.chunk)
            else:
                self._replace_reward(call, err)
            return
        except ray.exceptions.RayTaskError as err:
            raise ActorFailedError(f"{call.kind}: {name} failed: {type(err.cause).__name__}: {err.cause}") from err
        if call.kind == "generate":
            result.check_groups(self.cfg.rollout.group_size)
            call.chunk.batch = result
            self._start_scoring(call.chunk)
        else:
            self.counts["score_s"] += time.monotonic() - call.started
            self._buffer(call.chunk, call.chunk.batch.with_rewards(result))

    def _start_scoring(self, chunk: Chunk) -> None:
        per_replica = self._outstanding("score", len(self.actors.reward.handles))
        # the fewest outstanding calls, then the fewest calls so far: replicas take turns
        replica = min(range(len(per_replica)), key=lambda i: (per_replica[i], self.score_calls[i]))
        self.score_calls[replica] += 1
        self._issue(self.actors.reward.start_score(replica, chunk.batch), Call("score", replica, chunk),
                    per_replica[replica])

    def _replace_reward(self, call: Call, err: Exception) -> None:
        """A replica died: replace it and score its chunks (this one and any still queued) again."""
        mine = [(r, c) for r, c in self.calls.items() if c.kind == "score" and c.actor == call.actor]
        for r, _ in mine:
            del self.calls[r]
        self.actors.reward.replace(call.actor, ActorFailedError(f"score: {self._name('score', call.actor)} died "
                                                                f"({type(err).__name__})"))
        for chunk in [call.chunk] + [c.chunk for _, c in mine]:
            self._start_scoring(chunk)

    def _replace_lost_workers(self) -> None:
        """Workers died while generating: settle the other generate calls, replace the dead
        workers and bring every worker to the current version (RolloutGroup.recover)."""
        pending = [r for r, c in self.calls.items() if c.kind == "generate"]
        ray.wait(pending, num_returns=len(pending), timeout=self.cfg.timeouts.generate_s)
        for ref in pending:
            if ref in self.calls and ray.wait([ref], timeout=0)[0]:
                self._finish(ref, self.calls.pop(ref))
        names = ", ".join(self.actors.rollout.names[i] for i in sorted(self.lost))
        self.actors.rollout.recover(ActorFailedError(f"generate: {names} died"), self.version)
        self.lost = set()

    def _buffer(self, chunk: Chunk, batch: RolloutBatch) -> None:
        from learner.advantages import informative_groups

        keep = np.ones(len(batch), bool)
        if self.cfg.learner.loss.dynamic_sampling:
            keep = informative_groups(torch.tensor(batch.rewards), torch.tensor(batch.group_ids)).numpy()
        ids = batch.group_ids
        for i, group_id in enumerate(dict.fromkeys(ids.tolist())):
            rows = np.flatnonzero(ids == group_id)
            self.counts["groups_scored"] += 1
            if not keep[rows[0]]:
                self.counts["dropped_uninformative"] += 1
                continue
            self.buffer.add(Group(chunk.version, chunk.position + i, batch.take(rows)))
