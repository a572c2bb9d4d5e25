"""Stopping a run cleanly: SIGTERM (a cluster pre-empting the job) or SIGINT (Ctrl-C) asks the
driver to finish the current step, checkpoint it and stop; a second signal stops at once."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger("mogrpo")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(Exception):
    """The run stopped on a signal after checkpointing `step`; the message says how to resume."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step} (checkpointed); resume with:\n"
                         f"  python -m orchestration.train --config {run_dir / 'config.yaml'}")


class StopOnSignal:
    """Installs the handlers for the driver's lifetime (main thread only; elsewhere, e.g. a
    driver run from a worker thread, signals keep their default behaviour). Until `arm()`
    (the first step starting) there is nothing to save, and a signal stops at once."""

    def __init__(self):
        self.requested: int | None = None  # the first signal's number
        self.armed = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def arm(self) -> None:
        self.armed = True

    def _handle(self, signum, frame) -> None:
        if not self.armed or self.requested is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name}: stopping now, without a checkpoint")
        self.requested = signum
        log.warning("%s received: finishing this step, checkpointing it, then stopping (send it again to stop now)",
                    signal.Signals(signum).name)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
