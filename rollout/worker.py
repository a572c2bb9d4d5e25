"""Rollout worker: owns one vLLM engine; samples groups of responses and takes in-place
weight updates from the learner. Orchestration wraps it with `ray.remote`.

Ray runs one method of an actor at a time, so generation never sees a half-applied
update: a version's weights are complete before the next `generate` starts."""

from __future__ import annotations

import time

from mogrpo.batch import Prompt, RolloutBatch, SamplingSettings
from mogrpo.weight_sync import SyncEndpoint


class StaleWeightsError(RuntimeError):
    """A worker was asked to generate with a policy version it does not hold."""


class RolloutWorker:
    """One vLLM engine. `name` appears in logs and in weight-sync errors."""

    def __init__(
        self,
        model_path: str,
        *,
        name: str = "rollout-0",
        dtype: str = "bfloat16",
        max_model_len: int = 1024,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = True,
        enable_prefix_caching: bool = True,
        trust_remote_code: bool = False,
    ):
        import rollout.weight_engine  # noqa: F401  (registers the "mogrpo" weight-sync backend)
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        self.name = name
        self.version = 0
        t0 = time.perf_counter()
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code,
            # Log-probs after temperature (and top-k/p), i.e. of the distribution sampled from.
            logprobs_mode="processed_logprobs",
            weight_transfer_config=WeightTransferConfig(backend="mogrpo"),
            worker_extension_cls="rollout.weight_engine.WorkerExtension",
        )
        self.startup_s = time.perf_counter() - t0

    def ready(self) -> dict:
        return {"name": self.name, "startup_s": self.startup_s, "policy_version": self.version}

    def generate(self, prompts: list[Prompt], sampling: SamplingSettings, first_group_id: int = 0,
                 expected_version: int | None = None) -> RolloutBatch:
        """Sample `sampling.group_size` responses per prompt; group ids count from `first_group_id`.
        With `expected_version`, refuse to generate from other weights (a missed update)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if expected_version is not None and expected_version != self.version:
            raise StaleWeightsError(f"{self.name} holds policy version {self.version}, expected {expected_version}")

        params = SamplingParams(
            n=sampling.group_size,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else 0,
            seed=sampling.seed,
            logprobs=0,
        )
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in prompts], params, use_tqdm=False
        )
        rows = []
        for g, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
            for sample in output.outputs:
                token_ids = list(sample.token_ids)
                logprobs = [step[tok].logprob for step, tok in zip(sample.logprobs, token_ids, strict=True)]
                rows.append(
                    {
                        "group_id": first_group_id + g,
                        "prompt_id": prompt.prompt_id,
                        "prompt": prompt.text,
                        "prompt_token_ids": list(prompt.token_ids),
                        "response": sample.text,
                        "response_token_ids": token_ids,
                        "response_logprobs": logprobs,
                        "finish_reason": sample.finish_reason or "stop",
                        "policy_version": self.version,
                    }
                )
        return RolloutBatch.from_rows(rows)

    def init_weight_sync(self, endpoint: SyncEndpoint, rank_offset: int) -> None:
        """Join the learner's sync group (blocks until every member has joined)."""
        info = {**endpoint.__dict__, "rank_offset": rank_offset}
        self.llm.init_weight_transfer_engine({"init_info": info})

    def update_weights(self, version: int) -> int:
        """Receive policy `version` from the learner, load it in place, drop stale KV."""
        self.llm.start_weight_update()
        self.llm.update_weights({"update_info": {"version": version}})
        self.llm.finish_weight_update(weight_version=str(version))
        # Cached prompt blocks hold keys/values of the old policy.
        self.llm.reset_prefix_cache()
        self.version = version
        return version

    def policy_version(self) -> int:
        return self.version

    def probe_transport(self, nbytes: int) -> int:
        return self.llm.collective_rpc("probe_transport", args=(nbytes,))[0]
