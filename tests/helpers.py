"""Helpers that several test modules share (tests import this module, never each other)."""

import torch

from mogrpo.batch import Prompt, SamplingSettings

GREEDY = SamplingSettings(group_size=1, max_new_tokens=12, temperature=0.0)
TINY = ["model.path=tiny-llama", "model.dtype=float32", "model.max_model_len=512", "learner.dtype=float32",
        "learner.omp_threads=1", "rollout.group_size=4", "rollout.max_new_tokens=16"]
"""Overrides of a run config for actors of the tiny test model started by `start_actor`."""


def long_prompt(tokenizer) -> Prompt:
    # Longer than one KV block (128 tokens on CPU): a stale prefix cache would serve the
    # old policy's keys and values for it after the update.
    text = "Here is a long note about gardens, rivers and mountains. " * 20
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    token_ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
    assert len(token_ids) > 128
    return Prompt(0, text, tuple(token_ids))


def hf_greedy(path, prompt: Prompt, n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = model.generate(torch.tensor([prompt.token_ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt.token_ids):].tolist()


def tiny_run_overrides(tmp_path, reward_model, steps):
    return [f"output_dir={tmp_path}", "run_name=e2e", "model.path=tiny-llama", f"steps={steps}",
            "rollout.prompts_per_step=2", "rollout.group_size=3", "rollout.max_new_tokens=8",
            f"reward.model={reward_model}", "reward.fit_if_missing=false", "learner.lr=1e-3",
            "checkpoint.every=1", "checkpoint.keep=1", "cluster.actor_start_timeout_s=300"]
