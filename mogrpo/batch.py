"""The records the roles exchange: a rollout batch (pyarrow-backed) and reward scores.

A RolloutBatch holds one row per sampled response. Rows of one prompt share a
`group_id`; GRPO normalises rewards within a group, so every group must be whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROLLOUT_SCHEMA = pa.schema(
    [
        ("group_id", pa.int64()),  # one per prompt in a step; rows of a group are adjacent
        ("prompt_id", pa.int64()),  # index of the prompt in the prompt data set
        ("prompt", pa.string()),  # the user message, as the reward model reads it
        ("prompt_token_ids", pa.list_(pa.int32())),  # chat-templated prompt tokens
        ("response", pa.string()),
        ("response_token_ids", pa.list_(pa.int32())),
        ("response_logprobs", pa.list_(pa.float32())),  # behaviour log-prob of each sampled token
        ("finish_reason", pa.string()),  # "stop" (eos) or "length" (truncated)
        ("policy_version", pa.int64()),  # weights version when this response began
        # The version that finished it: above policy_version when weights changed mid-response
        # (`rollout.partial_rollout`); null reads as policy_version.
        ("policy_version_last", pa.int64()),
        # True for a response written into the group (`rollout.written_refusals`), not sampled:
        # its log-probs are 0 placeholders; the learner uses its own (null reads as False).
        ("written", pa.bool_()),
    ]
)
REWARD_COLUMN = "reward"
LABEL_PREFIX = "reward/"


class BatchError(ValueError):
    """A batch violates its schema or the GRPO group invariants."""


@dataclass(frozen=True)
class RewardScores:
    """Scores of a batch of responses: each label's score in [0, 1] and the combined reward."""

    per_label: dict[str, np.ndarray]  # label -> [B] float32
    combined: np.ndarray  # [B] float32

    def __post_init__(self):
        n = len(self.combined)
        for label, values in {**self.per_label, REWARD_COLUMN: self.combined}.items():
            if len(values) != n:
                raise BatchError(f"reward scores: {label!r} has {len(values)} values, expected {n}")
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise BatchError(
                    f"reward scores: {label!r} is not finite for sample {int(bad[0])} "
                    f"(value {values[bad[0]]!r}; {bad.size} bad in all)"
                )

    @property
    def labels(self) -> list[str]:
        return list(self.per_label)


@dataclass(frozen=True)
class RolloutBatch:
    """One row per sampled response; see ROLLOUT_SCHEMA (plus reward columns once scored)."""

    table: pa.Table

    def __post_init__(self):
        missing = [f.name for f in ROLLOUT_SCHEMA if f.name not in self.table.column_names]
        if missing:
            raise BatchError(f"rollout batch lacks columns {missing}")

    @classmethod
    def from_rows(cls, rows: Sequence[dict]) -> RolloutBatch:
        return cls(pa.Table.from_pylist(list(rows), schema=ROLLOUT_SCHEMA))

    @classmethod
    def concat(cls, batches: Sequence[RolloutBatch]) -> RolloutBatch:
        if not batches:
            raise BatchError("cannot concatenate zero rollout batches")
        return cls(pa.concat_tables([b.table for b in batches], promote_options="default"))

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> list:
        return self.table.column(name).to_pylist()

    def numpy(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()

    @property
    def group_ids(self) -> np.ndarray:
        return self.numpy("group_id")

    @property
    def written(self) -> np.ndarray:
        """[B] bool: rows written into their group rather than sampled."""
        return pc.fill_null(self.table.column("written"), False).to_numpy(zero_copy_only=False).astype(bool)

    @property
    def versions_last(self) -> np.ndarray:
        """[B] int: the policy version that wrote each response's last token."""
        last = self.table.column("policy_version_last")
        return pc.coalesce(last, self.table.column("policy_version")).to_numpy()

    @property
    def num_groups(self) -> int:
        return len(pc.unique(self.table.column("group_id")))

    @property
    def has_rewards(self) -> bool:
        return REWARD_COLUMN in self.table.column_names

    @property
    def rewards(self) -> np.ndarray:
        if not self.has_rewards:
            raise BatchError("rollout batch has not been scored yet (no 'reward' column)")
        return self.numpy(REWARD_COLUMN)

    def label_names(self) -> list[str]:
        return [c[len(LABEL_PREFIX):] for c in self.table.column_names if c.startswith(LABEL_PREFIX)]

    def with_rewards(self, scores: RewardScores) -> RolloutBatch:
        if len(scores.combined) != len(self):
            raise BatchError(f"{len(scores.combined)} rewards for a batch of {len(self)} responses")
        table = self.table
        for label, values in scores.per_label.items():
            table = _set_column(table, LABEL_PREFIX + label, np.asarray(values, np.float32))
        table = _set_column(table, REWARD_COLUMN, np.asarray(scores.combined, np.float32))
        return RolloutBatch(table)

    def take(self, indices: Sequence[int] | np.ndarray) -> RolloutBatch:
        return RolloutBatch(self.table.take(pa.array(np.asarray(indices, dtype=np.int64))))

    def group_sizes(self) -> dict[int, int]:
        ids, counts = np.unique(self.group_ids, return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    def check_groups(self, group_size: int) -> None:
        """Raise unless every group has exactly `group_size` rows."""
        wrong = {g: n for g, n in self.group_sizes().items() if n != group_size}
        if wrong:
            raise BatchError(f"groups with a size other than {group_size}: {dict(list(wrong.items())[:5])}")

    def split_by_groups(self, parts: int) -> list[RolloutBatch]:
        """Split into `parts` batches of whole groups (equal group counts; order kept)."""
        groups = list(dict.fromkeys(self.group_ids.tolist()))
        if len(groups) % parts:
            raise BatchError(f"{len(groups)} groups cannot be split evenly into {parts} parts")
        per = len(groups) // parts
        ids = self.group_ids
        out = []
        for i in range(parts):
            keep = np.isin(ids, groups[i * per : (i + 1) * per])
            out.append(self.take(np.flatnonzero(keep)))
        return out


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    array = pa.array(values)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


@dataclass(frozen=True)
class Prompt:
    """A chat prompt ready for generation: the user text (for the reward model) and the
    chat-templated token ids (for the policy)."""

    prompt_id: int
    text: str
    token_ids: tuple[int, ...]
    tag: str = ""  # the source's `tag` (e.g. "harmful"), for per-kind metrics


@dataclass(frozen=True)
class SamplingSettings:
    """How a rollout worker samples each group."""

    group_size: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    written_responses: tuple[str, ...] = ()  # texts put into groups in place of samples
    written_per_group: int = 0  # each group: group_size - this sampled + this many written
