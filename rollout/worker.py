"""Rollout worker: owns one vLLM engine; samples groups of responses and takes in-place
weight updates from the learner. Orchestration wraps it with `ray.remote`.

Generate calls put their requests into the engine and step it, one step at a time under a
lock, until their own requests are done. By default Ray runs one method of the actor at a
time, so an update lands between two generate calls. With `rollout.partial_rollout` the
actor is threaded: calls share the engine (continuous batching) and an update takes the lock
between two steps, pauses the scheduler, loads the weights, drops every running request's
KV cache (vLLM recomputes it with the new weights when the request is scheduled again) and
resumes."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch

from mogrpo.batch import Prompt, RolloutBatch, SamplingSettings
from mogrpo.config import RunConfig
from mogrpo.hardware import local_dtype
from mogrpo.weight_sync import SyncEndpoint


class StaleWeightsError(RuntimeError):
    """A worker was asked to generate with a policy version it does not hold."""


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds adapters of `rank`."""
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(f"learner.lora.rank: {rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}")
    return fits[0]


def kv_bytes_per_token(model_config: dict, dtype: str) -> int:
    """Bytes of K and V one token holds across the layers of a Hugging Face decoder config."""
    heads = model_config["num_attention_heads"]
    head_dim = model_config.get("head_dim") or model_config["hidden_size"] // heads
    kv_heads = model_config.get("num_key_value_heads", heads)
    return 2 * model_config["num_hidden_layers"] * kv_heads * head_dim * (4 if dtype == "float32" else 2)


def cpu_kv_cache_bytes(run: RunConfig, model_config: dict, dtype: str) -> int:
    """A CPU worker's KV cache: `rollout.cpu_kv_cache_gib`, or for `auto` (see its doc) the
    sequences one worker generates at once, plus a quarter."""
    r = run.rollout
    if r.cpu_kv_cache_gib != "auto":
        return int(r.cpu_kv_cache_gib * 2**30)
    groups = r.chunk_groups or -(-r.prompts_per_step // r.num_workers)  # one generate call at a time
    if r.partial_rollout:  # the worker's queued calls share the engine
        groups *= r.max_chunks_per_worker
    tokens = max(groups * r.group_size * (run.data.max_prompt_tokens + r.max_new_tokens), run.model.max_model_len)
    return int(1.25 * tokens * kv_bytes_per_token(model_config, dtype))


def cpu_engine_args(model_path: str, run: RunConfig, dtype: str) -> dict:
    """vLLM engine arguments this machine needs: on CPU, the KV cache sized by
    `cpu_kv_cache_bytes` (and no inherited VLLM_CPU_KVCACHE_SPACE, which would override it);
    nothing on a GPU."""
    if torch.cuda.is_available():
        return {}
    config = json.loads((Path(model_path) / "config.json").read_text())
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return {"kv_cache_memory_bytes": cpu_kv_cache_bytes(run, config, dtype)}


class RolloutWorker:
    """Rollout worker `index` of a run: one vLLM engine set up from the run config's `model`
    and `rollout` sections (its seed is the run's plus `index`). When the learner syncs LoRA
    adapters (`learner.lora.sync: adapter`), updates carry the adapters, served by vLLM's
    LoRA path over the unchanged base weights; otherwise whole weights, loaded in place."""

    def __init__(self, model_path: str, run: RunConfig, index: int = 0):
        import rollout.weight_engine  # noqa: F401  (registers the "mogrpo" weight-sync backend)
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        lora_adapter = run.learner.lora.peft_kwargs() if run.learner.lora.syncs_adapters else None
        name = f"rollout-{index}"
        self.name = name
        self.dtype = local_dtype(run.model.dtype)
        self.version = 0
        self.lora_adapter = lora_adapter
        self.lora_request = None  # the adapter of the current version, once one has arrived
        self.adapter_loads = 0
        lora_args = {}
        if lora_adapter is not None:
            lora_args = {"enable_lora": True, "max_lora_rank": vllm_max_lora_rank(lora_adapter["r"]), "max_loras": 1}
            self.adapter_root = Path(tempfile.mkdtemp(prefix=f"mogrpo-{name}-adapters-"))
        t0 = time.perf_counter()
        self.llm = LLM(
            model=model_path,
            dtype=self.dtype,
            max_model_len=run.model.max_model_len,
            seed=run.seed + index,
            tensor_parallel_size=run.rollout.tensor_parallel_size,
            gpu_memory_utilization=run.rollout.gpu_memory_utilization,
            enforce_eager=run.rollout.enforce_eager,
            enable_prefix_caching=run.rollout.enable_prefix_caching,
            trust_remote_code=run.model.trust_remote_code,
            # Log-probs after temperature (and top-k/p), i.e. of the distribution sampled from.
            logprobs_mode="processed_logprobs",
            weight_transfer_config=WeightTransferConfig(backend="mogrpo"),
            worker_extension_cls="rollout.weight_engine.WorkerExtension",
            **lora_args,
            **cpu_engine_args(model_path, run, self.dtype),
        )
        self.startup_s = time.perf_counter() - t0
        self.engine_lock = threading.Lock()  # one engine step or weight load at a time
        self.no_update = threading.Event()  # cleared while an update waits: steps let it take the lock next
        self.no_update.set()
        # request id -> (RequestOutput, the version that finished it), until its caller collects it
        self.finished: dict[str, tuple[object, int]] = {}
        self.in_flight = 0  # requests in the engine
        self.request_ids = itertools.count()

    def ready(self) -> dict:
        return {"name": self.name, "startup_s": self.startup_s, "policy_version": self.version, "dtype": self.dtype}

    def generate(self, prompts: list[Prompt], sampling: SamplingSettings, first_group_id: int = 0,
                 expected_version: int | None = None) -> RolloutBatch:
        """Sample `sampling.group_size` responses per prompt (less `written_per_group`, which
        are taken in turn from `written_responses`); group ids count from `first_group_id`.
        With `expected_version`, refuse to generate from older weights (a missed update).
        Rows record the version when the call began and, per response, the one that finished it."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if expected_version is not None and self.version < expected_version:
            raise StaleWeightsError(f"{self.name} holds policy version {self.version}, expected {expected_version}")

        params = SamplingParams(
            n=sampling.group_size - sampling.written_per_group,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else 0,
            seed=sampling.seed,
            logprobs=0,
        )
        params.output_kind = RequestOutputKind.FINAL_ONLY
        with self.engine_lock:
            first_version = self.version
            ids = [f"{self.name}-{next(self.request_ids)}" for _ in prompts]
            for request_id, prompt in zip(ids, prompts):
                self.llm.llm_engine.add_request(request_id, TokensPrompt(prompt_token_ids=list(prompt.token_ids)),
                                                params, lora_request=self.lora_request)
            self.in_flight += len(ids)
        outputs = self._run_until_done(ids)
        rows = []
        for g, (prompt, (output, last_version)) in enumerate(zip(prompts, outputs, strict=True)):
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
                        "policy_version": first_version,
                        "policy_version_last": last_version,
                        "written": False,
                    }
                )
            rows += self._written_rows(rows[-1], sampling, first_group_id + g)
        return RolloutBatch.from_rows(rows)

    def _run_until_done(self, request_ids: list[str]) -> list:
        """Step the engine until every request of `request_ids` has finished (steps also
        advance other calls' requests, whose outputs wait in `finished`); their outputs, each with
        the version that finished it, in order."""
        waiting = set(request_ids)
        while True:
            self.no_update.wait()
            with self.engine_lock:
                if waiting.issubset(self.finished):
                    return [self.finished.pop(i) for i in request_ids]
                if not self.llm.llm_engine.has_unfinished_requests():
                    lost = sorted(waiting - set(self.finished))
                    raise RuntimeError(f"{self.name}: the engine has nothing left to run, but requests {lost[:3]} "
                                       "never finished")
                self._step()

    def _step(self) -> None:
        """One engine step (the caller holds `engine_lock`); finished outputs wait in `finished`."""
        for output in self.llm.llm_engine.step():
            if output.finished:
                self.finished[output.request_id] = (output, self.version)
                self.in_flight -= 1

    def _written_rows(self, sampled: dict, sampling: SamplingSettings, group_id: int) -> list[dict]:
        """The group's written responses, tokenised as the policy would emit them (text, then
        end of sequence); which texts rotates with the group and the step's seed."""
        texts = sampling.written_responses
        tokenizer = self.llm.get_tokenizer()
        first = group_id * sampling.written_per_group + (sampling.seed or 0)
        rows = []
        for k in range(sampling.written_per_group):
            text = texts[(first + k) % len(texts)]
            token_ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            rows.append({**sampled, "response": text, "response_token_ids": token_ids,
                         "response_logprobs": [0.0] * len(token_ids), "finish_reason": "stop", "written": True})
        return rows

    def init_weight_sync(self, endpoint: SyncEndpoint, rank_offset: int) -> None:
        """Join the learner's sync group (blocks until every member has joined); a worker
        already in a group leaves it first."""
        self.llm.init_weight_transfer_engine({"init_info": {"endpoint": asdict(endpoint), "rank_offset": rank_offset}})

    def update_weights(self, version: int) -> int:
        """Receive policy `version` from the learner and load it in place, between two engine
        steps; the KV cache of the old policy is dropped, that of requests still running too
        (they are recomputed when scheduled again)."""
        self.no_update.clear()  # generate calls stop stepping, so the update takes the lock next
        try:
            with self.engine_lock:
                paused = self.in_flight > 0
                if paused:  # requests in flight (partial rollout) wait in the scheduler, not aborted
                    self.llm.sleep(level=0, mode="keep")
                if self.lora_adapter is not None:
                    self._update_adapter(version)
                else:
                    self.llm.start_weight_update()
                    self.llm.update_weights({"update_info": {"version": version}})
                    self.llm.finish_weight_update(weight_version=str(version))
                # Cached prompt blocks and running requests hold keys/values of the old policy.
                self.llm.reset_prefix_cache(reset_running_requests=paused)
                if paused:
                    self.llm.wake_up(tags=["scheduling"])
                self.version = version
        finally:
            self.no_update.set()
        return version

    def _update_adapter(self, version: int) -> None:
        """Receive the adapters into a peft folder, load them into vLLM's LoRA slot (before
        the next generate needs them) and drop the previous version's."""
        from vllm.lora.request import LoRARequest

        self.adapter_loads += 1  # a fresh id per load: vLLM does not reload an id it holds
        folder = self.adapter_root / f"{self.adapter_loads:06d}"
        path = self.llm.collective_rpc("receive_adapter", args=(version, str(folder), self.lora_adapter))[0]
        request = LoRARequest(f"policy-v{version}", self.adapter_loads, path)
        self.llm.llm_engine.add_lora(request)
        previous, self.lora_request = self.lora_request, request
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def policy_version(self) -> int:
        return self.version
