"""Actor groups: plain classes that hold the handles of one role's actors, fan calls out
and put the answers back together. Every wait goes through `gather` (or the rollout
stream's wait), which names the actor that died, failed or did not answer within its
`timeouts.*`; calls on the rollout group survive workers that die, reward replicas are
replaced."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import ray

from mogrpo.batch import Prompt, RolloutBatch, SamplingSettings
from mogrpo.config.sections import TimeoutsConfig, WeightSyncConfig
from mogrpo.weight_sync import SyncEndpoint

log = logging.getLogger("mogrpo")
T = TypeVar("T")


class ActorFailedError(RuntimeError):
    """An actor died, timed out, or raised; the message names it. `pending` holds the
    calls of the same fan-out that had not finished yet (to wait out before recovering)."""

    def __init__(self, message: str, pending: list | None = None):
        super().__init__(message)
        self.pending = pending or []


def gather(named_refs: dict[str, ray.ObjectRef], what: str, timeout_s: float | None = None) -> dict:
    """Wait for every ref; on the first failure raise naming its actor and what it was doing."""
    pending = {ref: name for name, ref in named_refs.items()}
    results = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout_s)
        if not done:
            raise ActorFailedError(f"{what}: {', '.join(sorted(pending.values()))} did not answer within {timeout_s:g}s",
                                   list(pending))
        ref = done[0]
        name = pending.pop(ref)
        try:
            results[name] = ray.get(ref)
        except ray.exceptions.ActorDiedError as err:
            raise ActorFailedError(f"{what}: actor {name} died ({first_line(err)})", list(pending)) from err
        except ray.exceptions.RayActorError as err:
            raise ActorFailedError(f"{what}: actor {name} is unavailable ({first_line(err)})", list(pending)) from err
        except ray.exceptions.RayTaskError as err:
            raise task_failed(what, name, err, list(pending))
    return {name: results[name] for name in named_refs}


def task_failed(what: str, name: str, err: ray.exceptions.RayTaskError,
                pending: list | None = None) -> ActorFailedError:
    """The error for a call that raised inside actor `name` (its cause attached)."""
    failure = ActorFailedError(f"{what}: {name} failed: {type(err.cause).__name__}: {err.cause}", pending)
    failure.__cause__ = err.as_instanceof_cause() if hasattr(err, "as_instanceof_cause") else err
    return failure


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class RolloutGroup:
    """The vLLM rollout workers; prompts are split between them in contiguous chunks.

    Every call on the group survives workers that die (a vLLM crash, an out-of-memory kill,
    a lost node), at most `max_restarts` in a run, once `connect` has joined the group to the
    learner. A collective cannot take in a new member, so recovery re-forms the sync group:
    1. wait until the calls in flight when the failure surfaced have settled (a learner
       blocked on the dead peer fails within `weight_sync.timeout_s`);
    2. find the workers whose process is gone and start new ones with `spawn(i)` (in their
       placement bundles);
    3. every member (learner rank 0, surviving and new workers) joins a fresh sync group;
    4. one full sync brings every worker to the current policy version;
    5. the call that failed runs again.
    Anything else (a worker that raised but is alive, restarts used up) re-raises the error:
    the run stops and resumes from its last checkpoint."""

    def __init__(self, handles: list, names: list[str], ranks_per_worker: int,
                 spawn: Callable[[int], ray.actor.ActorHandle] | None = None, max_restarts: int = 0,
                 start_timeout_s: float = 300, timeouts: TimeoutsConfig | None = None):
        self.handles, self.names, self.ranks_per_worker = handles, names, ranks_per_worker
        self.spawn, self.max_restarts, self.start_timeout_s = spawn, max_restarts, start_timeout_s
        self.timeouts = timeouts or TimeoutsConfig()
        self.restarts = 0
        self.learner: LearnerGroup | None = None  # set by `connect`
        self.sync_config: WeightSyncConfig | None = None
        self.wire_dtype = ""

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[Prompt], sampling: SamplingSettings, first_group_id: int = 0,
                 version: int | None = None) -> RolloutBatch:
        """Split `prompts` over the workers in contiguous chunks and put the answers back in
        order (generated again if a worker died). The in-training evaluation uses this; a
        run's rollouts come from the stream (pipeline.py), one `start_chunk` at a time."""

        def attempt() -> RolloutBatch:
            chunks = np.array_split(np.arange(len(prompts)), len(self.handles))
            refs = {name: self.start_chunk(i, [prompts[j] for j in chunk], sampling, first_group_id + int(chunk[0]),
                                           version)
                    for i, (name, chunk) in enumerate(zip(self.names, chunks)) if len(chunk)}
            return RolloutBatch.concat(list(gather(refs, "generate", self.timeouts.generate_s).values()))

        return self._survive(attempt, version, redo=lambda: self.generate(prompts, sampling, first_group_id, version))

    def start_chunk(self, worker: int, prompts: list[Prompt], sampling: SamplingSettings, first_group_id: int,
                    version: int | None) -> ray.ObjectRef:
        """One generate call on worker `worker` (the rollout stream's unit of work)."""
        return self.handles[worker].generate.remote(prompts, sampling, first_group_id, version)

    # ------------------------------------------------------------------ weight sync
    def connect(self, learner: LearnerGroup, sync: WeightSyncConfig, wire_dtype: str) -> SyncEndpoint:
        """Open the sync group: learner rank 0 (it hosts the rendezvous) and every vLLM
        worker rank; all members join at once."""
        self.learner, self.sync_config, self.wire_dtype = learner, sync, wire_dtype
        addr, port = gather({"learner-0": learner.handles[0].sync_rendezvous.remote()}, "weight-sync rendezvous",
                            self.timeouts.sync_s)["learner-0"]
        tp = self.ranks_per_worker
        endpoint = SyncEndpoint(
            transport=sync.transport,
            master_addr=sync.master_addr or addr,
            master_port=sync.master_port or port,
            world_size=1 + len(self.handles) * tp,
            timeout_s=sync.timeout_s,
            peer_names=["learner"] + [name for name in self.names for _ in range(tp)],
        )
        inits = {n: h.init_weight_sync.remote(endpoint, int(sync.bucket_mb * 2**20), sync.verify_checksum, wire_dtype)
                 for n, h in zip(learner.names, learner.handles)}
        workers = {name: h.init_weight_sync.remote(endpoint, 1 + i * tp)
                   for i, (name, h) in enumerate(zip(self.names, self.handles))}
        gather({**inits, **workers}, "weight-sync group set-up", self.timeouts.sync_s)
        return endpoint

    def sync(self, version: int) -> dict:
        """Broadcast the learner's weights as `version`; both ends run at once. Returns the
        learner's sync statistics (none if a worker died and recovery synced everyone)."""
        return self._survive(lambda: self._sync(version), version, redo=dict)

    def _sync(self, version: int) -> dict:
        sends = self.learner.send_weights(version)
        receives = {name: h.update_weights.remote(version) for name, h in zip(self.names, self.handles)}
        results = gather({**sends, **receives}, f"weight sync v{version}", self.timeouts.sync_s)
        wrong = {n: v for n, v in results.items() if n in receives and v != version}
        if wrong:
            raise RuntimeError(f"weight sync v{version}: workers report other versions {wrong}")
        return results["learner-0"]

    def ensure_current(self, version: int) -> None:
        """A worker whose version differs from the learner's is re-synced."""
        stale = {n: v for n, v in self.versions().items() if v != version}
        if stale and version > 0:
            log.warning("re-syncing workers that missed policy version %d: %s", version, stale)
            self.sync(version)

    def versions(self) -> dict[str, int]:
        return gather({n: h.policy_version.remote() for n, h in zip(self.names, self.handles)}, "policy_version",
                      self.timeouts.generate_s)

    # ------------------------------------------------------------------ recovery
    def _survive(self, action: Callable[[], T], version: int | None, redo: Callable[[], T]) -> T:
        """`action()`; if it fails because workers died, replace them, bring everyone to
        policy `version` and return `redo()`."""
        try:
            return action()
        except ActorFailedError as err:
            self.recover(err, version or 0)
        return redo()

    def recover(self, err: ActorFailedError, version: int) -> None:
        """Steps 1-4 above after `err`; re-raises it unless workers died and may be replaced."""
        if self.learner is None or self.spawn is None:
            raise err
        if err.pending:
            ray.wait(err.pending, num_returns=len(err.pending), timeout=self.sync_config.timeout_s + 30)
        dead = self.dead()
        if not dead:
            raise err
        names = [self.names[i] for i in dead]
        if self.restarts + len(dead) > self.max_restarts:
            raise ActorFailedError(f"{', '.join(names)} died and rollout.max_restarts="
                                   f"{self.max_restarts} restarts are used up ({err})") from err
        log.warning("%s died (%s); starting replacements and re-forming the weight-sync group", ", ".join(names), err)
        for i in dead:
            ray.kill(self.handles[i], no_restart=True)
            self.handles[i] = self.spawn(i)
            gather({self.names[i]: self.handles[i].ready.remote()}, f"restarting {self.names[i]}", self.start_timeout_s)
        self.restarts += len(dead)
        self.connect(self.learner, self.sync_config, self.wire_dtype)
        if version > 0:
            self._sync(version)
        log.warning("%s replaced and at policy version %d (%d of %d restarts used)",
                    ", ".join(names), version, self.restarts, self.max_restarts)

    def dead(self) -> list[int]:
        """Indices of the workers whose process is gone (call once the calls in flight have settled)."""
        return dead_actors(self.handles, "policy_version")


def dead_actors(handles: list, method: str) -> list[int]:
    """Indices of the actors whose process is gone: a cheap `method` call fails with an actor
    error (a busy actor is not dead: call this once the calls in flight have settled)."""
    refs = [getattr(h, method).remote() for h in handles]
    ray.wait(refs, num_returns=len(refs), timeout=60)
    dead = []
    for i, ref in enumerate(refs):
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.RayActorError:
            dead.append(i)
        except ray.exceptions.GetTimeoutError:
            pass
    return dead


class LearnerGroup:
    """The DeepSpeed learner ranks; each trains on an equal share of whole groups."""

    def __init__(self, handles: list, timeouts: TimeoutsConfig | None = None):
        self.handles = handles
        self.names = [f"learner-{i}" for i in range(len(handles))]
        self.timeouts = timeouts or TimeoutsConfig()

    def start_train(self, batch: RolloutBatch) -> dict[str, ray.ObjectRef]:
        shards = batch.split_by_groups(len(self.handles))
        return {n: h.train_step.remote(s) for n, h, s in zip(self.names, self.handles, shards)}

    def finish_train(self, refs: dict[str, ray.ObjectRef]) -> dict[str, float]:
        """The ranks' training statistics: token counts (`tokens/*`) summed, the rest averaged."""
        per_rank = list(gather(refs, "train_step", self.timeouts.train_s).values())
        return {k: float((np.sum if k.startswith("tokens/") else np.mean)([m[k] for m in per_rank]))
                for k in per_rank[0]}

    def send_weights(self, version: int) -> dict:
        return {n: h.send_weights.remote(version) for n, h in zip(self.names, self.handles)}

    def call(self, method: str, *args) -> list:
        """Call `method` on every rank (collective operations need all of them); each may take
        `timeouts.save_s` (these are saves and loads)."""
        refs = {n: getattr(h, method).remote(*args) for n, h in zip(self.names, self.handles)}
        return list(gather(refs, method, self.timeouts.save_s).values())

    def dead(self) -> list[int]:
        """Indices of the ranks whose process is gone."""
        return dead_actors(self.handles, "ready")

    def kill(self) -> None:
        for handle in self.handles:
            ray.kill(handle, no_restart=True)


class RewardGroup:
    """The reward replicas. They are stateless: one that dies is replaced in its placement
    bundle (`spawn(i)`) and its calls are sent again, at most `max_restarts` times a run."""

    def __init__(self, handles: list, names: list[str], spawn: Callable[[int], ray.actor.ActorHandle] | None = None,
                 max_restarts: int = 0, start_timeout_s: float = 300, timeouts: TimeoutsConfig | None = None):
        self.handles, self.names, self.spawn = handles, names, spawn
        self.max_restarts, self.start_timeout_s = max_restarts, start_timeout_s
        self.timeouts = timeouts or TimeoutsConfig()
        self.restarts = 0

    def start_score(self, replica: int, batch: RolloutBatch) -> ray.ObjectRef:
        """Score whole groups on one replica: its `RewardScores` (per label and combined)."""
        return self.handles[replica].score.remote(batch.column("prompt"), batch.column("response"),
                                                  batch.group_ids.tolist(),
                                                  [len(t) for t in batch.column("response_token_ids")])

    def replace(self, replica: int, err: Exception) -> None:
        """Start a new replica in place of one that died (or re-raise `err` if restarts are used up)."""
        name = self.names[replica]
        if self.spawn is None or self.restarts >= self.max_restarts:
            raise ActorFailedError(f"{name} died and reward.max_restarts={self.max_restarts} restarts are used up "
                                   f"({err})") from err
        log.warning("%s died (%s); starting a replacement", name, err)
        ray.kill(self.handles[replica], no_restart=True)
        self.handles[replica] = self.spawn(replica)
        gather({name: self.handles[replica].labels.remote()}, f"restarting {name}", self.start_timeout_s)
        self.restarts += 1
