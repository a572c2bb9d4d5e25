"""Capability kept: how likely each policy finds good reference answers, and how varied
and repetitive its own answers are.

- `reference_logliks`: the mean per-token log-likelihood of a reference answer's first
  `ref_max_tokens` tokens after the chat-templated prompt (`answer_logliks`, which scores any
  text after a prompt: transformers, one sequence at a time, written to disk as it goes).
- `distinct_n`: distinct n-grams / all n-grams over a whole set of answers (low when a
  policy gives the same answer to everything).
- `repetition`: per answer, 1 - distinct 4-grams / all 4-grams (Welleck et al.'s seq-rep-4;
  high when an answer loops).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.generate import AnswerStore, Policy
from evaluation.sets import Row

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    """Lowercased word and punctuation tokens."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of all texts (NaN when there are none)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition(text: str, n: int = 4) -> float:
    """1 - distinct n-grams / n-grams of one text (0 for a text shorter than n + 1 tokens)."""
    grams = ngrams(words(text), n)
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


def distinct_stat(texts: Sequence[str], n: int = 2):
    """`distinct_n` as a statistic of resampled indices (for bootstrap_stat): each text's
    n-grams are hashed once; a draw concatenates the drawn texts' hashes."""
    hashed = [np.array([hash(g) for g in ngrams(words(t), n)], dtype=np.int64) for t in texts]

    def stat(idx: np.ndarray) -> float:
        parts = [hashed[i] for i in idx]
        total = sum(len(p) for p in parts)
        return len(np.unique(np.concatenate(parts))) / total if total else math.nan

    return stat


def reference_logliks(policy: Policy, rows: list[Row], ref_max_tokens: int, dtype: str, out: Path) -> dict[str, float]:
    """row id -> mean log-prob per token of the row's reference answer under the policy
    (read from `out/loglik/<name>.jsonl` where already computed)."""
    store = AnswerStore(out / "loglik" / f"{policy.name}.jsonl",
                        {**policy.cache_key(), "ref_max_tokens": ref_max_tokens, "dtype": dtype})
    items = [(r.id, r.prompt, r.reference) for r in rows if r.reference]
    return answer_logliks(policy, items, ref_max_tokens, dtype, store, "reference answers")


def answer_logliks(policy: Policy, items: list[tuple[str, str, str]], max_tokens: int | None, dtype: str,
                   store: AnswerStore, what: str) -> dict[str, float]:
    """id -> mean log-prob per token of `text`'s first `max_tokens` tokens (all with None) after the
    chat-templated `prompt`, for (id, prompt, text) items (transformers, one sequence at a time;
    appended to `store` every 16 items, and read back from it on a rerun)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mogrpo.hardware import local_dtype

    have = {k: v["loglik"] for k, v in store.load().items()}
    todo = [item for item in items if item[0] not in have]
    if not todo:
        return have
    print(f"[{policy.name}] scoring {len(todo)} {what}", flush=True)
    tok = AutoTokenizer.from_pretrained(policy.path)
    model = AutoModelForCausalLM.from_pretrained(policy.path, dtype=getattr(torch, local_dtype(dtype))).eval()
    t0, batch = time.time(), []
    for i, (item_id, prompt_text, text) in enumerate(todo, 1):
        prompt = tok.apply_chat_template(policy.messages(prompt_text), tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(text, add_special_tokens=False)["input_ids"][:max_tokens]
        ids = torch.tensor([p_ids + a_ids])
        with torch.inference_mode():
            logits = model(ids).logits[0, len(p_ids) - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(a_ids)[:, None]).mean().item()
        batch.append({"id": item_id, "loglik": lp})
        if len(batch) == 16 or i == len(todo):
            store.append(batch)
            have.update({x["id"]: x["loglik"] for x in batch})
            batch = []
            if i % 160 == 0 or i == len(todo):  # every tenth write
                print(f"[{policy.name}] {i}/{len(todo)} {what} scored, {time.time() - t0:.0f} s", flush=True)
    return have
