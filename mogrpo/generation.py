"""Offline answers of a policy to chat prompts, with vLLM, cached on disk.

Used where a policy's own answers are data: the reward model's training rows in the
policy's style, the reward-direction check of `make reward-eval`, and the evaluation
harness. The engine runs in a child process (`python -m mogrpo.generation IN OUT`), so the
caller's process keeps no vLLM state, memory or process group; the chat template is
applied by the engine's tokenizer. Answers are cached as JSON under
`$MOGRPO_CACHE/answers/<hash>.json`, keyed by the policy's weights file sizes and
mtimes, the prompts and every sampling setting, so a rerun reads them back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mogrpo.atomic import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerSettings:
    """How answers are sampled (temperature 0 = greedy)."""

    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 64
    seed: int = 0
    dtype: str = "auto"
    max_model_len: int = 512


def model_fingerprint(path: Path) -> str:
    """Names, sizes and mtimes of the weight and config files of a model folder."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json", ".bin"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)


def cache_key(policy: Path, prompts: Sequence[str], settings: AnswerSettings) -> str:
    h = hashlib.sha256()
    for part in (str(policy.resolve()), model_fingerprint(policy), json.dumps(asdict(settings), sort_keys=True),
                 *prompts):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def _answer_cache_dir() -> Path:
    from mogrpo.models import cache_dir

    return cache_dir() / "answers"


def generate_answers(policy: str | Path, prompts: Sequence[str], settings: AnswerSettings = AnswerSettings(),
                     cache: bool = True) -> list[list[str]]:
    """`settings.n` answers to each prompt -> [len(prompts)][n] strings (cached)."""
    from mogrpo.models import resolve_model

    path = resolve_model(str(policy))
    file = _answer_cache_dir() / f"{cache_key(path, prompts, settings)}.json"
    if cache and file.is_file():
        answers = json.loads(file.read_text())
        if len(answers) == len(prompts):
            log.info("answers of %s to %d prompts read from %s", path.name, len(prompts), file)
            return answers
    answers = _generate(path, list(prompts), settings)
    if cache:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(file, json.dumps(answers))
    return answers


def _generate(path: Path, prompts: list[str], s: AnswerSettings) -> list[list[str]]:
    """Run `_generate_here` in a child process."""
    with tempfile.TemporaryDirectory(prefix="mogrpo-answers-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "answers.json"
        request.write_text(json.dumps({"policy": str(path), "prompts": prompts, "settings": asdict(s)}))
        proc = subprocess.run([sys.executable, "-m", "mogrpo.generation", str(request), str(result)])
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"generating answers with {path} failed (exit code {proc.returncode}; see the log above)")
        return json.loads(result.read_text())


def _generate_here(path: Path, prompts: list[str], s: AnswerSettings) -> list[list[str]]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    from mogrpo.hardware import local_dtype

    llm = LLM(model=str(path), dtype=local_dtype(s.dtype), max_model_len=s.max_model_len, seed=s.seed,
              enforce_eager=True, gpu_memory_utilization=0.3, trust_remote_code=False)
    # The engine seed makes sampling repeatable; a per-request seed breaks vLLM-CPU (its generator has no offset).
    params = SamplingParams(n=s.n, temperature=s.temperature, max_tokens=s.max_tokens)
    log.info("generating %d x %d answers with %s", len(prompts), s.n, path.name)
    outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=True)
    return [[o.text for o in out.outputs] for out in outputs]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    job = json.loads(Path(sys.argv[1]).read_text())
    answers = _generate_here(Path(job["policy"]), job["prompts"], AnswerSettings(**job["settings"]))
    Path(sys.argv[2]).write_text(json.dumps(answers))
