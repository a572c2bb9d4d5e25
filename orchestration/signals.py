"""Stopping a run cleanly: SIGTERM (a cluster pre-empting the job) or SIGINT (Ctrl-C) asks the
driver to finish the current step, checkpoint it and stop. Where the step is still generating
or scoring and is not expected to finish within the grace period, it is abandoned at once and
the step before it checkpointed instead. A second signal stops at once."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger("mogrpo")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(Exception):
    """The run stopped on a signal with `step` its last checkpointed step (0: none yet);
    `abandoned` is the step that was cut short, if one was. The message says how to resume."""

    def __init__(self, signum: int, step: int, run_dir: Path, abandoned: int | None = None):
        self.signum, self.step, self.abandoned = signum, step, abandoned
        name = signal.Signals(signum).name
        what = f"after step {step} (checkpointed)" if abandoned is None else (
            f"during step {abandoned}, which could not finish in the grace period; "
            + (f"step {step} is checkpointed" if step else "no step had finished, nothing to checkpoint"))
        super().__init__(f"stopped by {name} {what}; {'resume' if step else 'start again'} with:\n"
                         f"  python -m orchestration.train --config {run_dir / 'config.yaml'}")


class StopOnSignal:
    """Installs the handlers for the driver's lifetime (main thread only; elsewhere, e.g. a
    driver run from a worker thread, signals keep their default behaviour). Until `arm()`
    (the first step starting) there is nothing to save, and a signal stops at once.

    Inside `abandonable(expected_s)` (the part of a step before the learner changes), a
    signal arriving when the step is expected to need more than `grace_s` seconds to end sets
    `abandoned` and raises KeyboardInterrupt (the only exception Ray lets out of a wait)."""

    def __init__(self, grace_s: float = float("inf")):
        self.grace_s = grace_s
        self.requested: int | None = None  # the first signal's number
        self.armed = self.abandoned = False
        self._expected_end: float | None = None  # time.monotonic() the abandonable step should end at
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def arm(self) -> None:
        self.armed = True

    @contextlib.contextmanager
    def abandonable(self, expected_s: float | None):
        """A signal inside may cut the step short if `expected_s` (the step's expected length
        from now; None: unknown, the step finishes) exceeds the grace period."""
        self._expected_end = None if expected_s is None else time.monotonic() + expected_s
        try:
            yield
        finally:
            self._expected_end = None

    def _abandon(self, left_s: float) -> None:
        self.abandoned = True
        log.warning("abandoning this step: it needs ~%.0fs more, over checkpoint.stop_grace_s=%gs", left_s,
                    self.grace_s)
        raise KeyboardInterrupt("step abandoned")

    def _handle(self, signum, frame) -> None:
        if not self.armed or self.requested is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name}: stopping now, without a checkpoint")
        self.requested = signum
        if self._expected_end is not None and self._expected_end - time.monotonic() > self.grace_s:
            self._abandon(self._expected_end - time.monotonic())
        log.warning("%s received: finishing this step, checkpointing it, then stopping (send it again to stop now)",
                    signal.Signals(signum).name)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
