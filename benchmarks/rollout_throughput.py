"""Rollout generation against bare vLLM, in one run with SmolLM2 on this machine:

- `rollout/tokens_per_s`: a step's generation through our rollout worker (a Ray call to
  `RolloutWorker.generate`, 8 prompts x 4 samples x <= 64 new tokens as in cpu_smoke.yaml,
  rows and log-probs gathered into a RolloutBatch), timed in the driver;
- `rollout/bare_tokens_per_s`: `vllm.LLM.generate` on the same token prompts with the same
  SamplingParams (log-probs of the sampled tokens included, as the learner needs them), dtype,
  max_model_len, seed, eager mode, prefix caching, threads and KV-cache size, in an actor of
  the same resources, without our weight-transfer engine or worker extension;
- `rollout/over_bare`: their ratio (target >= 0.95).

Medians of interleaved repeats; both actors run one at a time.

    .venv/bin/python -m benchmarks.rollout_throughput     (also part of `make bench`)
"""

from __future__ import annotations

import statistics
import time

import ray

from benchmarks.results import merge_results, print_table
from mogrpo.batch import Prompt, SamplingSettings
from mogrpo.config import RunConfig, load_config
from mogrpo.hardware import local_dtype, resolve_auto_dtypes
from mogrpo.models import resolve_model
from mogrpo.runtime import worker_env
from orchestration.actors import start_actor
from orchestration.groups import gather

QUESTIONS = ["Explain photosynthesis briefly.", "Write a haiku about rain.", "How do I boil an egg?",
             "What is a prime number?", "Give me a tip for learning to code.", "Why is the sea salty?",
             "Describe a cat to someone who has never seen one.", "What is inflation?"]


class BareVLLM:
    """vllm.LLM with the rollout worker's engine settings and nothing of ours around it."""

    def __init__(self, model_path: str, run: RunConfig, index: int = 0):
        from vllm import LLM

        from rollout.worker import cpu_engine_args

        dtype = local_dtype(run.model.dtype)
        self.llm = LLM(model=model_path, dtype=dtype, max_model_len=run.model.max_model_len,
                       seed=run.seed + index, enforce_eager=run.rollout.enforce_eager,
                       enable_prefix_caching=run.rollout.enable_prefix_caching, logprobs_mode="processed_logprobs",
                       **cpu_engine_args(model_path, run, dtype))

    def ready(self) -> bool:
        return True

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> int:
        """Generated tokens."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=sampling.group_size, max_tokens=sampling.max_new_tokens, temperature=1.0,
                                seed=sampling.seed, logprobs=0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return sum(len(sample.token_ids) for out in outputs for sample in out.outputs)


def run(repeats: int = 5) -> dict:
    from transformers import AutoTokenizer

    from mogrpo.prompts import encode_prompt

    path = str(resolve_model("smollm2-135m-instruct"))
    cfg = resolve_auto_dtypes(load_config("cluster_configs/cpu_smoke.yaml", ["rollout.max_new_tokens=64"]))
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [Prompt(i, q, tuple(encode_prompt(tokenizer, [{"role": "user", "content": q}])))
               for i, q in enumerate(QUESTIONS)]
    worker = start_actor("rollout", cfg, path)
    bare = start_actor("rollout", cfg, path, actor_class=BareVLLM)
    gather({"rollout": worker.ready.remote(), "bare": bare.ready.remote()}, "start", 600)

    def ours(seed: int) -> int:
        batch = ray.get(worker.generate.remote(prompts, SamplingSettings(group_size=4, max_new_tokens=64, seed=seed)))
        return sum(len(t) for t in batch.column("response_token_ids"))

    def theirs(seed: int) -> int:
        return ray.get(bare.generate.remote([list(p.token_ids) for p in prompts],
                                            SamplingSettings(group_size=4, max_new_tokens=64, seed=seed)))

    ours(0), theirs(0)  # warm-up
    rates = {"ours": [], "bare": []}
    for seed in range(1, repeats + 1):
        for name, fn in (("ours", ours), ("bare", theirs)):
            t0 = time.perf_counter()
            tokens = fn(seed)
            rates[name].append(tokens / (time.perf_counter() - t0))
    for handle in (worker, bare):
        ray.kill(handle, no_restart=True)
    ours_rate, bare_rate = statistics.median(rates["ours"]), statistics.median(rates["bare"])
    return {"rollout/dtype": cfg.model.dtype, "rollout/threads": cfg.rollout.omp_threads,
            "rollout/tokens_per_s": ours_rate, "rollout/bare_tokens_per_s": bare_rate,
            "rollout/over_bare": ours_rate / bare_rate}


def main(argv: list[str] | None = None) -> dict:
    from mogrpo.runtime import init_ray

    init_ray(None, num_cpus=4, runtime_env={"env_vars": worker_env(1)})
    results = run()
    print_table("rollout generation: our worker vs bare vLLM (SmolLM2-135M, 8 prompts x 4 x <= 64 tokens)", results)
    merge_results(results)
    return results


if __name__ == "__main__":
    main()
