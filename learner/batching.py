"""From a rollout batch to padded training tensors, mini-batches and token-budget
micro-batches. Pure torch; no DeepSpeed."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from mogrpo.batch import RolloutBatch


@dataclass
class TrainTensors:
    """One row per response: prompt + response, right-padded. T = longest response."""

    input_ids: Tensor  # [B, L] int64, padded with 0
    attention_mask: Tensor  # [B, L] int64
    response_start: Tensor  # [B] index of the first response token in input_ids
    response_len: Tensor  # [B] response tokens
    behaviour_logp: Tensor  # [B, T] vLLM's log-prob of each sampled token, 0 on padding
    mask: Tensor  # [B, T] float32, 1 on response tokens
    rewards: Tensor  # [B] float32
    group_ids: Tensor  # [B] int64
    truncated: Tensor  # [B] bool, finish reason "length"
    written: Tensor  # [B] bool, written into the group, not sampled (behaviour_logp holds 0s)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> TrainTensors:
        return TrainTensors(*(getattr(self, f.name).to(device) for f in fields(self)))

    def rows(self, index: Tensor) -> TrainTensors:
        """The given rows, trimmed to the longest of them."""
        length = int((self.response_start[index] + self.response_len[index]).max())
        width = int(self.response_len[index].max())
        return TrainTensors(
            self.input_ids[index, :length],
            self.attention_mask[index, :length],
            self.response_start[index],
            self.response_len[index],
            self.behaviour_logp[index, :width],
            self.mask[index, :width],
            self.rewards[index],
            self.group_ids[index],
            self.truncated[index],
            self.written[index],
        )


def to_tensors(batch: RolloutBatch) -> TrainTensors:
    """Pad a scored rollout batch into training tensors."""
    prompts = batch.column("prompt_token_ids")
    responses = batch.column("response_token_ids")
    logprobs = batch.column("response_logprobs")
    n = len(batch)
    if any(len(r) == 0 for r in responses):
        # An empty response has no token to take a gradient on; vLLM always emits >= 1.
        raise ValueError("rollout batch holds an empty response (no tokens)")
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    width = max(len(r) for r in responses)
    input_ids = torch.zeros(n, max(lengths), dtype=torch.long)  # [B, L]
    attention_mask = torch.zeros(n, max(lengths), dtype=torch.long)  # [B, L]
    behaviour = torch.zeros(n, width, dtype=torch.float32)  # [B, T]
    mask = torch.zeros(n, width, dtype=torch.float32)  # [B, T]
    for i, (p, r, lp) in enumerate(zip(prompts, responses, logprobs)):
        input_ids[i, : lengths[i]] = torch.tensor(p + r)
        attention_mask[i, : lengths[i]] = 1
        behaviour[i, : len(r)] = torch.tensor(lp)
        mask[i, : len(r)] = 1
    return TrainTensors(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_start=torch.tensor([len(p) for p in prompts]),
        response_len=torch.tensor([len(r) for r in responses]),
        behaviour_logp=behaviour,
        mask=mask,
        rewards=torch.tensor(np.array(batch.rewards if batch.has_rewards else np.zeros(n), dtype=np.float32)),
        group_ids=torch.tensor(np.array(batch.group_ids, dtype=np.int64)),
        truncated=torch.tensor([f == "length" for f in batch.column("finish_reason")]),
        written=torch.tensor(batch.written),
    )


def to_response_coords(per_position: Tensor, response_start: Tensor, width: int) -> Tensor:
    """[B, L-1] values aligned as `learner.logprobs.response_logprobs` (position t scores
    token t+1) -> [B, width] values of the response tokens (column j = response token j)."""
    offsets = torch.arange(width, device=per_position.device)
    index = (response_start[:, None] - 1 + offsets[None, :]).clamp(max=per_position.shape[1] - 1)
    return per_position.gather(1, index)  # [B, width]


def mini_batches(n: int, parts: int, generator: torch.Generator) -> list[Tensor]:
    """Shuffle rows 0..n-1 and split them into `parts` mini-batches of (nearly) equal size."""
    if parts > n:
        raise ValueError(f"learner.mini_batches={parts} exceeds the {n} responses of a batch")
    return list(torch.randperm(n, generator=generator).tensor_split(parts))


def micro_batches(rows: Tensor, lengths: Tensor, token_budget: int) -> list[Tensor]:
    """Split `rows` into micro-batches whose padded size (rows x longest) fits `token_budget`.

    Rows are sorted by length so that similar lengths share a micro-batch (less padding);
    a single row longer than the budget still gets a micro-batch of its own."""
    rows, lengths = rows.cpu(), lengths.cpu()
    order = rows[torch.argsort(lengths[rows], descending=True)]
    out, current, longest = [], [], 0
    for row, length in zip(order.tolist(), lengths[order].tolist()):
        longest_if_added = max(longest, length)
        if current and longest_if_added * (len(current) + 1) > token_budget:
            out.append(torch.tensor(current))
            current, longest_if_added = [], length
        current.append(row)
        longest = longest_if_added
    if current:
        out.append(torch.tensor(current))
    return out
