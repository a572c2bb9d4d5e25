"""Replacing rollout workers that died (a vLLM crash, an out-of-memory kill, a lost node).

A collective cannot take in a new member, so recovery re-forms the weight-sync group:
1. wait until the calls that were in flight when the failure surfaced have settled (a
   learner blocked on the dead peer fails within `weight_sync.timeout_s`);
2. find the workers whose process is gone and start new ones in their placement bundles;
3. every member (learner rank 0, surviving and new workers) joins a fresh sync group;
4. one full sync brings every worker to the current policy version;
5. the action that failed runs again.
Anything else (a learner or reward actor, a worker that raised but is alive, restarts
used up) re-raises the original error: the run stops and resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import ray

from mogrpo.config import RunConfig
from orchestration.groups import ActorFailedError, LearnerGroup, RolloutGroup
from orchestration.steps import connect_weight_sync, sync_weights

log = logging.getLogger("mogrpo")
T = TypeVar("T")


class RolloutRecovery:
    """Replaces dead rollout workers, at most `rollout.max_restarts` in a run."""

    def __init__(self, learner: LearnerGroup, rollout: RolloutGroup, cfg: RunConfig):
        self.learner, self.rollout, self.cfg = learner, rollout, cfg
        self.restarts = 0

    def attempt(self, action: Callable[[], T], version: int, redo: Callable[[], T] | None = None) -> T:
        """`action()`; if it fails because rollout workers died, replace them, bring them to
        policy `version` and return `redo()` (default: `action()` again)."""
        try:
            return action()
        except ActorFailedError as err:
            self.recover(err, version)
        return (redo or action)()

    def recover(self, err: ActorFailedError, version: int) -> None:
        """Replace the dead workers behind `err` and re-sync everyone to `version`, or
        re-raise `err` when there is nothing this can fix."""
        settle_s = self.cfg.weight_sync.timeout_s + 30
        if err.pending:
            ray.wait(err.pending, num_returns=len(err.pending), timeout=settle_s)
        dead = self.rollout.dead()
        if not dead:
            raise err
        names = [self.rollout.names[i] for i in dead]
        if self.restarts + len(dead) > self.cfg.rollout.max_restarts:
            raise ActorFailedError(f"{', '.join(names)} died and rollout.max_restarts="
                                   f"{self.cfg.rollout.max_restarts} restarts are used up ({err})") from err
        log.warning("%s died (%s); starting replacements and re-forming the weight-sync group", ", ".join(names), err)
        for i in dead:
            self.rollout.respawn(i, self.cfg.cluster.actor_start_timeout_s)
        self.restarts += len(dead)
        connect_weight_sync(self.learner, self.rollout, self.cfg.weight_sync, wire_dtype=self.cfg.model.dtype)
        if version > 0:
            sync_weights(self.learner, self.rollout, version)
        log.warning("%s replaced and at policy version %d (%d of %d restarts used)",
                    ", ".join(names), version, self.restarts, self.cfg.rollout.max_restarts)
