"""Actor groups: plain classes that hold the handles of one role's actors, fan calls out
and put the answers back together. Every wait goes through `gather`, which names the
actor that died or failed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import ray

from mogrpo.batch import Prompt, RolloutBatch, SamplingSettings
from mogrpo.weight_sync import SyncEndpoint


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
            raise ActorFailedError(f"{what}: actor {name} died ({_first_line(err)})", list(pending)) from err
        except ray.exceptions.RayActorError as err:
            raise ActorFailedError(f"{what}: actor {name} is unavailable ({_first_line(err)})", list(pending)) from err
        except ray.exceptions.RayTaskError as err:
            cause = err.as_instanceof_cause() if hasattr(err, "as_instanceof_cause") else err
            raise ActorFailedError(f"{what}: {name} failed: {type(err.cause).__name__}: {err.cause}",
                                   list(pending)) from cause
    return {name: results[name] for name in named_refs}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class RolloutGroup:
    """The vLLM rollout workers; prompts are split between them in contiguous chunks.
    `spawn(i)` starts a new worker i in its placement bundle (to replace a dead one)."""

    def __init__(self, handles: list, names: list[str], ranks_per_worker: int,
                 spawn: Callable[[int], ray.actor.ActorHandle] | None = None):
        self.handles, self.names, self.ranks_per_worker = handles, names, ranks_per_worker
        self.spawn = spawn

    def dead(self) -> list[int]:
        """Indices of the workers whose process is gone (a busy worker is not dead: call
        this once the calls in flight have settled)."""
        refs = [h.policy_version.remote() for h in self.handles]
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

    def respawn(self, i: int, timeout_s: float) -> None:
        """Replace worker i by a fresh one (policy version 0, outside any sync group)."""
        if self.spawn is None:
            raise RuntimeError("this rollout group cannot start workers (no spawn function)")
        ray.kill(self.handles[i], no_restart=True)
        self.handles[i] = self.spawn(i)
        gather({self.names[i]: self.handles[i].ready.remote()}, f"restarting {self.names[i]}", timeout_s)

    def start_generate(self, prompts: list[Prompt], sampling: SamplingSettings, first_group_id: int,
                       version: int | None = None) -> dict:
        chunks = np.array_split(np.arange(len(prompts)), len(self.handles))
        return {
            name: handle.generate.remote([prompts[i] for i in chunk], sampling, first_group_id + int(chunk[0]), version)
            for name, handle, chunk in zip(self.names, self.handles, chunks)
            if len(chunk)
        }

    @staticmethod
    def finish_generate(refs: dict) -> RolloutBatch:
        return RolloutBatch.concat(list(gather(refs, "generate").values()))

    def generate(self, prompts: list[Prompt], sampling: SamplingSettings, first_group_id: int = 0,
                 version: int | None = None) -> RolloutBatch:
        return self.finish_generate(self.start_generate(prompts, sampling, first_group_id, version))

    def init_weight_sync(self, endpoint: SyncEndpoint) -> dict:
        return {name: h.init_weight_sync.remote(endpoint, 1 + i * self.ranks_per_worker)
                for i, (name, h) in enumerate(zip(self.names, self.handles))}

    def update_weights(self, version: int) -> dict:
        return {name: h.update_weights.remote(version) for name, h in zip(self.names, self.handles)}

    def versions(self) -> dict[str, int]:
        return gather({n: h.policy_version.remote() for n, h in zip(self.names, self.handles)}, "policy_version")


class LearnerGroup:
    """The DeepSpeed learner ranks; each trains on an equal share of whole groups."""

    def __init__(self, handles: list):
        self.handles = handles
        self.names = [f"learner-{i}" for i in range(len(handles))]

    def train(self, batch: RolloutBatch) -> dict[str, float]:
        shards = batch.split_by_groups(len(self.handles))
        results = gather({n: h.train_step.remote(s) for n, h, s in zip(self.names, self.handles, shards)}, "train_step")
        per_rank = list(results.values())
        return {k: float(np.mean([m[k] for m in per_rank])) for k in per_rank[0]}

    def send_weights(self, version: int) -> dict:
        return {n: h.send_weights.remote(version) for n, h in zip(self.names, self.handles)}

    def call(self, method: str, *args) -> list:
        """Call `method` on every rank (collective operations need all of them)."""
        refs = {n: getattr(h, method).remote(*args) for n, h in zip(self.names, self.handles)}
        return list(gather(refs, method).values())
