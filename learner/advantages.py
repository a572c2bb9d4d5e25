"""Group-relative advantages and DAPO's reward shaping: pure tensor functions.

GRPO (DeepSeekMath, arXiv 2402.03300, sec. 4.1.2) samples a group of G responses per
prompt and uses each response's reward relative to its group as the advantage of every
one of its tokens, instead of a learned value function:

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)        scale="std"   (GRPO, DAPO, GSPO)
    A_i =  r_i - mean(r_group)                                 scale="none"  (Dr. GRPO)

Dr. GRPO (arXiv 2503.20783) drops the std division: it up-weights groups whose
rewards barely differ (question-level difficulty bias).

Rows of a group are found by an explicit integer group id, need not be adjacent, and every
group must have exactly `group_size` rows; anything else raises (no silent fallback to a
batch-level normalisation).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def _group_index(group_ids: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Unique group ids, each row's index into them, and each group's size."""
    if group_ids.dim() != 1 or group_ids.numel() != n:
        raise ValueError(f"group_ids must have shape [{n}], got {list(group_ids.shape)}")
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    return torch.unique(group_ids, return_inverse=True, return_counts=True)  # [G], [B], [G]


def _as_float(rewards: Tensor) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape [B], got {list(rewards.shape)}")
    return rewards if rewards.dtype.is_floating_point else rewards.float()


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    group_size: int,
    scale: Literal["std", "none"] = "std",
    eps: float = 1e-4,
) -> Tensor:
    """Group-relative advantage of each response (one value per row, broadcast to its tokens).

    1. Find each row's group and check every group has exactly `group_size` rows.
    2. Centre: r_i - mean_g, the mean over the row's group.
    3. scale="std": divide by (std_g + eps), with std_g the *sample* standard deviation
       (Bessel-corrected, divisor G - 1), as torch.std does by default and as TRL, verl and
       OpenRLHF compute it, so our advantages match theirs number for number. (The
       population std, divisor G, would make every advantage sqrt(G / (G - 1)) times larger,
       e.g. 1.07x for G = 8.) A sample std needs group_size >= 2.
    4. A group whose rewards are all equal carries no learning signal; its advantages are
       set to exactly 0 (the floating-point mean of equal numbers can differ from them by
       one ulp, which would otherwise leave a ~1e-12 residue).

    Args:
        rewards: [B] scalar reward of each response.
        group_ids: [B] integer id of the prompt each response answers.
        group_size: responses per prompt (rollout n).
        scale: "std" (GRPO, DAPO, GSPO) or "none" (Dr. GRPO).
        eps: added to the group std before dividing.

    Returns:
        [B] advantages, same float dtype as `rewards` (float32 for integer rewards).

    Raises:
        ValueError: a group does not have exactly `group_size` rows (the message names the
            group id and its size), or the shapes / scale are wrong.
    """
    rewards = _as_float(rewards)  # [B]
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    if group_size < 1 or (scale == "std" and group_size < 2):
        raise ValueError(f"group_size must be >= 2 for scale='std' (>= 1 otherwise), got {group_size}")

    # 1. groups and their sizes
    uniq, inverse, counts = _group_index(group_ids, rewards.numel())  # [G], [B], [G]
    bad = torch.nonzero(counts != group_size).flatten()
    if bad.numel():
        g = int(bad[0])
        raise ValueError(
            f"group {int(uniq[g])} has {int(counts[g])} responses, expected group_size={group_size} "
            f"({bad.numel()} of {uniq.numel()} groups have the wrong size)"
        )
    num_groups = uniq.numel()

    # 2. centre on the group mean
    sums = rewards.new_zeros(num_groups).index_add_(0, inverse, rewards)  # [G]
    mean = sums / group_size  # [G]
    centred = rewards - mean[inverse]  # [B]

    # 3. scale by the sample std of the group
    if scale == "std":
        sq = centred.new_zeros(num_groups).index_add_(0, inverse, centred * centred)  # [G]
        std = (sq / (group_size - 1)).sqrt()  # [G]
        advantages = centred / (std[inverse] + eps)  # [B]
    else:
        advantages = centred  # [B]

    # 4. equal-reward groups: exactly zero
    return torch.where(informative_groups(rewards, group_ids), advantages, 0.0)  # [B]


def trained_rows(advantages: Tensor, written: Tensor, mean_logp: Tensor, push_down_min_logp: float) -> Tensor:
    """[B] bool: the rows the loss counts. A response written into its group rather than
    sampled (`rollout.written_refusals`) counts where the reward preferred it to the group's
    samples (positive advantage), and, with a negative one, only where the policy would
    write it itself (`mean_logp`, its mean token log-prob under the policy, at least
    `push_down_min_logp`): pushing down a text the policy would not write only moves its
    probability to arbitrary other text (a first try collapsed the benign answers within 14
    steps), while pushing down a refusal it has learned to give a benign request is the
    point."""
    if not advantages.shape == written.shape == mean_logp.shape:
        raise ValueError(f"advantages {list(advantages.shape)}, written {list(written.shape)} and mean_logp "
                         f"{list(mean_logp.shape)} differ in shape")
    return ~written | (advantages > 0) | (mean_logp >= push_down_min_logp)


def weight_written_push_down(advantages: Tensor, written: Tensor, weight: float) -> Tensor:
    """[B] advantages with a written response's negative advantage scaled by `weight` in [0, 1]:
    a push-down of written refusals weaker than their push-up, so that on the refusal's
    prompt-independent part (what every refusal shares) the push-up on harmful requests is
    not undone by the push-down on benign ones, while the contrast between the two remains."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"written push-down weight {weight} is outside [0, 1]")
    if advantages.shape != written.shape:
        raise ValueError(f"advantages {list(advantages.shape)} and written {list(written.shape)} differ in shape")
    return torch.where(written & (advantages < 0), advantages * weight, advantages)


def informative_groups(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """DAPO dynamic sampling (arXiv 2503.14476, sec. 3.2): which rows belong to a group with signal.

    A group whose rewards are all equal has zero advantage for every row, so it contributes
    no policy gradient (only KL) and shrinks the effective batch; DAPO drops such groups and
    samples new prompts until the batch is full.

    Args:
        rewards: [B] scalar reward of each response.
        group_ids: [B] integer group id of each response (rows of a group need not be adjacent).

    Returns:
        [B] bool: False for every row of a group whose rewards are all equal, True otherwise.
    """
    rewards = _as_float(rewards)  # [B]
    uniq, inverse, _ = _group_index(group_ids, rewards.numel())  # [G], [B]
    hi = rewards.new_full((uniq.numel(),), -torch.inf).scatter_reduce(0, inverse, rewards, "amax")  # [G]
    lo = rewards.new_full((uniq.numel(),), torch.inf).scatter_reduce(0, inverse, rewards, "amin")  # [G]
    return (hi != lo)[inverse]  # [B]


def overlong_penalty(
    response_lengths: Tensor,
    max_new_tokens: int,
    buffer_tokens: int,
    penalty: float,
) -> Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, sec. 3.4), a term to ADD to the reward.

    With L_max = max_new_tokens and L_cache = buffer_tokens:

        R_length(y) = 0                                        |y| <= L_max - L_cache
                    = ((L_max - L_cache) - |y|) / L_cache      L_max - L_cache < |y| <= L_max
                    = -1                                        |y| > L_max

    scaled by `penalty`, so it goes linearly from 0 to -penalty across the buffer. With
    buffer_tokens = 0 it is 0 for every response the sampler can return (|y| <= L_max).
    Add it to the reward before `group_advantages`.

    Args:
        response_lengths: [B] number of generated tokens of each response.
        max_new_tokens: the sampler's generation limit L_max.
        buffer_tokens: length of the penalty ramp L_cache (0 <= L_cache <= L_max).
        penalty: the penalty at the limit (>= 0).

    Returns:
        [B] float32 values in [-penalty, 0].
    """
    if not 0 <= buffer_tokens <= max_new_tokens:
        raise ValueError(f"buffer_tokens must be in [0, max_new_tokens={max_new_tokens}], got {buffer_tokens}")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    lengths = response_lengths.float()  # [B]
    start = max_new_tokens - buffer_tokens
    if buffer_tokens == 0:
        frac = (lengths > max_new_tokens).float()  # [B]
    else:
        frac = ((lengths - start) / buffer_tokens).clamp(0.0, 1.0)  # [B]
    return -penalty * frac  # [B]
