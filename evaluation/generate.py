"""Policies' answers, generated with vLLM and written to disk as they are produced.

`AnswerStore` is a JSONL file per policy: a header (the policy's folder, a fingerprint of
its weights, the generation settings), then one row per answer. Each chunk of answers is
appended and fsynced as soon as it is generated, so an interrupted run loses at most the
chunk in flight; a rerun reads what is there (a torn last line is dropped) and generates
only the rest. A store written by other weights or settings is an error, never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from evaluation.sets import GenerationConfig, Row
from mogrpo.atomic import atomic_write_text
from mogrpo.generation import model_fingerprint as fingerprint
from mogrpo.errors import UserError
from mogrpo.prompts import to_messages

log = logging.getLogger(__name__)


class PolicyError(UserError, RuntimeError):
    """A policy folder that does not load, or answers on disk that belong to another policy."""


@dataclass(frozen=True)
class Policy:
    name: str
    ref: str
    path: Path
    system_prompt: str | None = None
    """Given before every prompt (and before every reference answer scored); None = the chat
    template's own default."""

    def messages(self, prompt: str) -> list[dict]:
        return to_messages(prompt, self.system_prompt)

    def cache_key(self) -> dict:
        """What answers on disk must have been made from: these weights, this system prompt."""
        key = {"policy": str(self.path.resolve()), "weights": fingerprint(self.path)}
        return {**key, "system_prompt": self.system_prompt} if self.system_prompt else key


def check_policy(name: str, ref: str, system_prompt: str | None = None) -> Policy:
    """Resolve a policy and load its config and tokenizer now, so that a bad folder fails
    before any generation, naming the policy and the folder."""
    from transformers import AutoConfig, AutoTokenizer

    from mogrpo.models import resolve_model

    try:
        path = resolve_model(ref)
        AutoConfig.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise PolicyError(f"policy {name!r} ({ref}) does not load: {type(err).__name__}: {err}") from err
    if not getattr(tok, "chat_template", None):
        raise PolicyError(f"policy {name!r} ({path}): its tokenizer has no chat template")
    if system_prompt:
        try:
            tok.apply_chat_template(to_messages("Hello", system_prompt), tokenize=False)
        except Exception as err:
            raise PolicyError(f"policy {name!r} ({path}): its chat template does not take a system prompt "
                              f"(--system-prompt {name}=...): {type(err).__name__}: {err}") from err
    if not any(p.suffix in (".safetensors", ".bin") for p in path.iterdir()):
        raise PolicyError(f"policy {name!r}: {path} holds no weights (*.safetensors or *.bin)")
    return Policy(name, ref, path, system_prompt)


class AnswerStore:
    """A header line, then one JSON row per line; appended chunk by chunk, fsynced."""

    def __init__(self, file: Path, header: dict):
        self.file, self.header = Path(file), header

    def load(self) -> dict[str, dict]:
        """Rows already on disk, by id (an error if the header is of other weights or settings)."""
        if not self.file.is_file():
            return {}
        lines = self.file.read_text(encoding="utf-8").split("\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if header != self.header:
            raise PolicyError(f"{self.file} holds answers of other weights or settings ({header} != {self.header}); "
                              "use another --out folder, or delete the file to generate them again")
        rows, torn = {}, 0
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows[row["id"]] = row
            except (ValueError, KeyError):
                torn += 1  # a line cut by an interruption
        if torn:
            log.warning("%s: %d torn line(s) dropped; their answers are generated again", self.file, torn)
            self._rewrite(list(rows.values()))
        return rows

    def _rewrite(self, rows: list[dict]) -> None:
        atomic_write_text(self.file, "\n".join(json.dumps(x) for x in [self.header, *rows]) + "\n")

    def append(self, rows: list[dict]) -> None:
        if not self.file.is_file():
            self._rewrite([])
        with open(self.file, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())


def open_engine(policy: Policy, g: GenerationConfig):
    """One in-process vLLM engine (the caller's `__main__` guard applies)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    from mogrpo.hardware import local_dtype

    try:
        return LLM(model=str(policy.path), dtype=local_dtype(g.dtype), max_model_len=g.max_model_len, seed=g.seed,
                   enforce_eager=True, gpu_memory_utilization=0.3, trust_remote_code=False)
    except Exception as err:
        raise PolicyError(f"policy {policy.name!r}: vLLM cannot load {policy.path}: {type(err).__name__}: {err}") from err


def generate_chunk(llm, policy: Policy, prompts: list[str], g: GenerationConfig) -> list[dict]:
    """Answers with the chat template: text, token count, and whether the limit cut it off.
    (No per-request seed: it breaks vLLM-CPU; the engine seed makes sampling repeatable.)"""
    from vllm import SamplingParams

    params = SamplingParams(n=1, temperature=g.temperature, max_tokens=g.max_tokens)
    outs = llm.chat([policy.messages(p) for p in prompts], params, use_tqdm=False)
    return [{"answer": o.outputs[0].text, "tokens": len(o.outputs[0].token_ids),
             "truncated": o.outputs[0].finish_reason == "length"} for o in outs]


def generation_header(policy: Policy, g: GenerationConfig) -> dict:
    return {**policy.cache_key(), "settings": g.model_dump(exclude={"chunk"})}


def ensure_answers(policy: Policy, rows: list[Row], g: GenerationConfig, out: Path) -> dict[str, dict]:
    """Every row's answer by this policy: read from `out/answers/<name>.jsonl`, the missing
    ones generated chunk by chunk (each written before the next starts)."""
    import torch

    store = AnswerStore(out / "answers" / f"{policy.name}.jsonl", generation_header(policy, g))
    have = store.load()
    todo = [r for r in rows if r.id not in have]
    print(f"[{policy.name}] {len(rows) - len(todo)} of {len(rows)} answers on disk; generating {len(todo)}", flush=True)
    if not todo:
        return have
    threads = torch.get_num_threads()
    llm = open_engine(policy, g)
    try:
        t0, done = time.time(), 0
        for i in range(0, len(todo), g.chunk):
            chunk = todo[i:i + g.chunk]
            answers = generate_chunk(llm, policy, [r.prompt for r in chunk], g)
            new = [{"id": r.id, **a} for r, a in zip(chunk, answers)]
            store.append(new)
            have.update({x["id"]: x for x in new})
            done += len(chunk)
            tokens = sum(a["tokens"] for a in answers)
            print(f"[{policy.name}] {done}/{len(todo)} answers ({chunk[-1].set}), {tokens / max(1e-9, time.time() - t0):.0f} "
                  f"tokens/s, {time.time() - t0:.0f} s", flush=True)
            t0 = time.time()
    finally:
        del llm
        import gc

        gc.collect()
        torch.set_num_threads(threads)  # vLLM-CPU lowers it for serving
    return have
