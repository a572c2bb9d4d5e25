"""The pieces of one GRPO step that the driver records: rollout statistics, the in-training
evaluation on held-out prompts, and the rollouts as parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mogrpo.atomic import atomic_write_file
from mogrpo.batch import Prompt, RolloutBatch, SamplingSettings
from mogrpo.config import RunConfig
from orchestration.actors import Actors


def refusal_metrics(batch: RolloutBatch, tags: list[str]) -> dict:
    """Share of the step's responses that XSTest's string-match judge calls refusals, in all
    and per prompt tag (`tags[prompt_id]`; untagged prompts count only in the total)."""
    from mogrpo.refusal import xstest_refusal

    refused = np.array([xstest_refusal(r) for r in batch.column("response")])  # [B]
    tag = np.array([tags[i] for i in batch.column("prompt_id")])  # [B]
    out = {"rollout/refusal_rate": float(refused.mean())}
    for t in sorted(set(tag.tolist()) - {""}):
        out[f"rollout/refusal_rate/{t}"] = float(refused[tag == t].mean())
    return out


def held_out_refusals(actors: Actors, prompts: list[Prompt], max_new_tokens: int, version: int) -> dict:
    """Greedy answers of the current policy to held-out prompts -> `eval/<tag>_refusal` per tag."""
    greedy = SamplingSettings(group_size=1, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    batch = actors.rollout.generate(prompts, greedy, first_group_id=0, version=version)
    rates = refusal_metrics(batch, [p.tag for p in prompts])
    return {f"eval/{k.rsplit('/', 1)[1]}_refusal": v for k, v in rates.items() if k.startswith("rollout/refusal_rate/")}


def step_metrics(batch: RolloutBatch, train: dict, labels: list[str], tags: list[str]) -> dict:
    """Rollout statistics of the sampled responses (written ones apart), and the learner's."""
    written = batch.written
    sampled = batch.take(np.flatnonzero(~written)) if written.any() else batch
    lengths = np.array([len(t) for t in sampled.column("response_token_ids")])
    return {
        **refusal_metrics(sampled, tags),
        "reward/mean": float(np.mean(sampled.rewards)),
        "reward/std": float(np.std(sampled.rewards)),
        **{f"reward/{label}": float(np.mean(sampled.numpy(f"reward/{label}"))) for label in labels},
        "response_len/mean": float(lengths.mean()),
        "response_len/max": int(lengths.max()),
        "response/truncated_frac": float(np.mean([f == "length" for f in sampled.column("finish_reason")])),
        **(written_metrics(batch, tags) if written.any() else {}),
        **train,
    }


def written_metrics(batch: RolloutBatch, tags: list[str]) -> dict:
    """How the reward rates the written refusals against the samples of their group:
    `written/margin` (its reward minus the group's sampled mean) and `written/preferred`
    (share of written refusals above that mean), in all and per prompt tag."""
    written, rewards, groups = batch.written, batch.rewards, batch.group_ids
    sampled_mean = {g: rewards[(groups == g) & ~written].mean() for g in np.unique(groups)}
    rows = np.flatnonzero(written)
    margin = np.array([rewards[i] - sampled_mean[groups[i]] for i in rows])  # [W]
    tag = np.array([tags[i] for i in batch.numpy("prompt_id")[rows]])  # [W]
    out = {"written/margin": float(margin.mean()), "written/preferred": float((margin > 0).mean())}
    for t in sorted(set(tag.tolist()) - {""}):
        out[f"written/margin/{t}"] = float(margin[tag == t].mean())
        out[f"written/preferred/{t}"] = float((margin[tag == t] > 0).mean())
    return out


def save_rollouts(run_dir: Path, step: int, batch: RolloutBatch, cfg: RunConfig, trained_version: int) -> None:
    """Every response of the step with its per-label scores, the step, its staleness (the
    version the learner updated minus the one that wrote it) and its group advantage (from
    the combined reward, before the learner's overlong and KL shaping), as parquet (atomic)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from learner.advantages import group_advantages
    from learner.losses import loss_variant

    loss = cfg.learner.loss
    advantages = group_advantages(torch.tensor(batch.rewards), torch.tensor(batch.group_ids), cfg.rollout.group_size,
                                  loss_variant(loss.variant).advantage_scale, loss.advantage_eps)
    table = (batch.table.append_column("step", pa.array(np.full(len(batch), step), pa.int32()))
             .append_column("staleness", pa.array(trained_version - batch.numpy("policy_version"), pa.int32()))
             .append_column("advantage", pa.array(advantages.numpy(), pa.float32())))
    atomic_write_file(run_dir / "rollouts" / f"step-{step:06d}.parquet", lambda tmp: pq.write_table(table, tmp))
