"""From a data config to split, label-filtered examples and pairs (no torch, no model)."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mogrpo.config.reward_training import RewardDataConfig
from mogrpo.prompts import normalise_prompt
from reward_training import refusal_sources as rs
from reward_training.contrast_requests import read_contrast_requests, read_safety_questions
from reward_training.justify_requests import read_justify_requests
from reward_training.sources import FILE_PATHS, FILE_READERS, DataError, Example, Pair, assign_split

log = logging.getLogger(__name__)


CONTEXT_READERS: dict[str, Callable[[Path, RewardDataConfig, set[str]], list]] = {
    "policy_answers": lambda path, config, holdout: rs.read_policy_answers(path, config.policy_answers, holdout),
    "framed_requests": lambda path, config, holdout: rs.read_framed_requests(path, holdout),
    "contrast_requests": lambda path, config, holdout: read_contrast_requests(path, config.policy_answers, holdout),
    "safety_questions": lambda path, config, holdout: read_safety_questions(path, config.policy_answers, holdout),
    "justify_requests": lambda path, config, holdout: read_justify_requests(path, config.policy_answers, holdout),
}
"""Readers that also take the data config and the hold-out (normalised evaluation prompts)."""
READERS = {**FILE_READERS, "harmful_requests": rs.read_harmful_requests, "benign_refusals": rs.read_benign_refusals,
           **CONTEXT_READERS}
"""Readers by source name (the keys of `data.sources`); those in `CONTEXT_READERS` take
(path, data config, hold-out), the others the path alone."""

DEFAULT_PATHS = {**FILE_PATHS, "harmful_requests": "harmbench_advbench", "benign_refusals": rs.HARMLESS_TRAIN,
                 "policy_answers": ".", "framed_requests": ".", "contrast_requests": ".",
                 "safety_questions": ".", "justify_requests": "."}
"""Where each source lives under the data folder (`../shared/data` by default)."""
SPLITS = ("train", "val", "test")


def resolve_data_dir(data_dir: str | Path) -> Path:
    """The data folder (`../shared/data` by default); a relative one is taken from the
    working directory, as every path of a config is."""
    return Path(data_dir).expanduser().resolve()


def default_data_dir() -> Path:
    """$MOGRPO_SHARED_DATA, else `../shared/data` beside the repository."""
    return resolve_data_dir(os.environ.get("MOGRPO_SHARED_DATA", "../shared/data"))


@dataclass
class SourceRows:
    """One source's rows of one split."""

    name: str
    examples: list[Example] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples) + len(self.pairs)


def _keep_labels(rows: list, keep: set[str]) -> tuple[list, int]:
    """Drop targets (pairs) of labels outside `keep`; rows left with no target are dropped,
    and so are rows with a blank response (the scorer never encodes those: see
    `RewardModel.score`)."""
    out, dropped = [], 0
    for r in rows:
        if isinstance(r, Pair):
            ok = r.label in keep and bool(r.chosen.strip()) and bool(r.rejected.strip())
            r2 = r
        else:
            targets = {k: v for k, v in r.targets.items() if k in keep}
            ok = bool(targets) and bool(r.response.strip())
            r2 = replace(r, targets=targets) if len(targets) != len(r.targets) else r
        if ok:
            out.append(r2)
        else:
            dropped += 1
    return out, dropped


def load_splits(config: RewardDataConfig, labels: list[str], seed: int = 0,
                splits: tuple[str, ...] = SPLITS) -> dict[str, dict[str, SourceRows]]:
    """split -> source -> rows, for every enabled source. A missing file is an error
    naming it; a source with no row left for the model's labels is an error too."""
    data_dir = resolve_data_dir(config.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data.data_dir {config.data_dir!r} resolves to {data_dir}, which is not a folder")
    out: dict[str, dict[str, SourceRows]] = {s: {} for s in splits}
    holdout = rs.holdout_prompts(data_dir, config.holdout)
    for name, src in config.sources.items():
        if not src.enabled:
            continue
        path = Path(src.path).expanduser() if src.path else Path(DEFAULT_PATHS[name])
        path = path if path.is_absolute() else data_dir / path
        rows = CONTEXT_READERS[name](path, config, holdout) if name in CONTEXT_READERS else READERS[name](path)
        n_read = len(rows)
        rows = [r for r in rows if normalise_prompt(r.prompt) not in holdout]
        if len(rows) < n_read:
            log.info("source %s: %d rows left out, their prompts are in data.holdout", name, n_read - len(rows))
        keep = set(labels) & set(src.labels) if src.labels is not None else set(labels)
        rows, dropped = _keep_labels(rows, keep)
        if not rows:
            raise DataError(f"data.sources.{name}: no row carries any of the labels {sorted(keep)} "
                            f"(disable the source or add its labels to model.labels)")
        if src.limit is not None and len(rows) > src.limit:
            rows = random.Random(f"{seed}:{name}").sample(rows, src.limit)
        for r in rows:
            split = assign_split(r.split_source or name, r.key, config.split_seed, config.val_fraction,
                                 config.test_fraction)
            if split in out:
                bucket = out[split].setdefault(name, SourceRows(name))
                (bucket.pairs if isinstance(r, Pair) else bucket.examples).append(r)
        log.info("source %-20s %6d rows from %s%s", name, len(rows), path,
                 f" ({dropped} without a model label or with a blank response dropped)" if dropped else "")
    return out


def split_counts(splits: dict[str, dict[str, SourceRows]]) -> dict[str, dict[str, int]]:
    """source -> split -> rows, for the log and metrics.json."""
    counts: dict[str, dict[str, int]] = {}
    for split, by_source in splits.items():
        for name, rows in by_source.items():
            counts.setdefault(name, {})[split] = len(rows)
    return counts
