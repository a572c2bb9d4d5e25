"""Resumable run state: the learner's DeepSpeed checkpoint (weights, optimizer, scheduler,
its RNG states) plus the driver's own state (step, policy version, prompt position, the
driver's Python, NumPy and torch RNG states), committed by one atomic write of
`latest.json` after every rank has finished writing. A crash mid-save leaves the previous
checkpoint as the newest complete one. `<run>/final.json` names the step and policy version
that `<run>/final/` holds, so a rerun of a finished run leaves that folder as it is."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mogrpo.atomic import atomic_write_text
from mogrpo.errors import MissingFileError


@dataclass
class DriverState:
    step: int  # last completed step
    policy_version: int
    prompt_position: int
    tag: str  # learner checkpoint tag under checkpoints/
    rng: dict = field(default_factory=dict)  # capture_rng(); empty in checkpoints of older releases


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def read_latest(run_dir: Path) -> DriverState | None:
    path = checkpoint_dir(run_dir) / "latest.json"
    if not path.is_file():
        return None
    try:
        state = DriverState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is damaged ({err}); delete it to start over, or restore it") from err
    if not (checkpoint_dir(run_dir) / state.tag).is_dir():
        raise MissingFileError(f"{path} names checkpoint {state.tag!r}, which is missing from {checkpoint_dir(run_dir)}")
    return state


def commit(run_dir: Path, state: DriverState, keep: int) -> None:
    """Make `state` the newest checkpoint, then prune all but the `keep` newest."""
    root = checkpoint_dir(run_dir)
    atomic_write_text(root / "latest.json", json.dumps(asdict(state), indent=2))
    tags = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")), key=lambda p: p.name)
    for old in tags[:-keep]:
        if old.name != state.tag:
            shutil.rmtree(old, ignore_errors=True)


def final_dir(run_dir: Path) -> Path:
    return run_dir / "final"


def mark_final(run_dir: Path, step: int, policy_version: int) -> None:
    """Record that `final/` (written just before) holds the policy of `step`."""
    atomic_write_text(run_dir / "final.json", json.dumps({"step": step, "policy_version": policy_version}))


def unmark_final(run_dir: Path) -> None:
    """Before training moves the policy: `final/` may no longer hold the run's newest one."""
    (run_dir / "final.json").unlink(missing_ok=True)


def final_is_current(run_dir: Path, state: DriverState) -> bool:
    """Whether `final/` holds the policy of checkpoint `state`. A run of an older release has no
    `final.json`: its `final/` holds that policy if it was written after the checkpoint."""
    final, marker = final_dir(run_dir), run_dir / "final.json"
    if not (final / "config.json").is_file():
        return False
    if not marker.is_file():
        return final.stat().st_mtime >= (checkpoint_dir(run_dir) / "latest.json").stat().st_mtime
    try:
        written = json.loads(marker.read_text())
    except ValueError:
        return False
    return (written.get("step"), written.get("policy_version")) == (state.step, state.policy_version)


def tag_for(step: int) -> str:
    return f"step-{step:07d}"
