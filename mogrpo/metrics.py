"""Metrics a person can plot: one JSON object per step in `metrics.jsonl`, the same
scalars as TensorBoard events, and a one-line status for the terminal."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from mogrpo.atomic import atomic_write_text


class MetricsLogger:
    """Appends to `<run_dir>/metrics.jsonl` (flushed per step, so a crash loses nothing
    already logged), writes TensorBoard scalars under `<run_dir>/tensorboard/`, and hands
    the numeric scalars to the `sinks` (mogrpo.tracking: W&B, MLflow)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, sinks: list | None = None):
        self.run_dir, self.tensorboard, self.sinks = Path(run_dir), tensorboard, sinks or []
        self.path = self.run_dir / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._writer = None
        self.started = time.time()

    def rewind(self, after_step: int | None) -> None:
        """Log from `after_step + 1` on: the steps after it (to be run again, e.g. after a
        resume from its checkpoint) leave metrics.jsonl and TensorBoard. None: a fresh run."""
        self._close_files()
        if after_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= after_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif after_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=(after_step or 0) + 1)

    def log(self, step: int, metrics: dict[str, float | int | str]) -> None:
        if self._file is None:
            self.rewind(None)
        record = {"step": step, "time": round(time.time() - self.started, 3), **metrics}
        self._file.write(json.dumps(record, default=float) + "\n")
        self._file.flush()
        scalars = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        for sink in self.sinks:
            sink.log(step, scalars)

    def _close_files(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
        self._file = self._writer = None

    def close(self, status: str = "FINISHED") -> None:
        """Close the files and end the trackers' runs with `status` (FINISHED, FAILED, KILLED)."""
        self._close_files()
        for sink in self.sinks:
            sink.close(status)


def status_line(step: int, steps: int, m: dict, labels: list[str]) -> str:
    """e.g. `step 3/10 v3 reward 0.612 [safety 0.81 actionability 0.55 ...] kl 0.0012 loss -0.003 len 41 | 52.1s (gen 8.2 rew 0.9 train 40.1 sync 0.6)`"""
    per_label = " ".join(f"{label} {m.get(f'reward/{label}', float('nan')):.2f}" for label in labels)
    refusals = " ".join(f"{k.rsplit('/', 1)[1]} {v:.2f}" for k, v in m.items() if k.startswith("rollout/refusal_rate/"))
    refusals += "".join(f" held-out {k[5:]} {v:.2f}" for k, v in m.items() if k.startswith("eval/"))
    return (
        f"step {step}/{steps} v{m.get('policy_version', '?')} reward {m.get('reward/mean', float('nan')):.3f} "
        f"[{per_label}] kl {m.get('kl', 0.0):.4f} loss {m.get('loss', float('nan')):+.4f} "
        f"clip {m.get('clip_frac', 0.0):.3f} len {m.get('response_len/mean', 0.0):.0f} "
        f"{f'refusals [{refusals}] ' if refusals else ''}| "
        f"{m.get('time/step', 0.0):.1f}s (gen {m.get('time/generate', 0.0):.1f} rew {m.get('time/reward', 0.0):.1f} "
        f"train {m.get('time/train', 0.0):.1f} sync {m.get('time/sync', 0.0):.1f})"
    )


@contextlib.contextmanager
def timed(times: dict[str, float], name: str):
    """Add the seconds the `with` block takes to `times[name]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
