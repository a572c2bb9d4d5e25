"""Partial rollout: a weight update reaches a worker in the middle of a response. The request
pauses, the new weights load, its KV cache is recomputed with them and it resumes: the tokens
after the switch are the new policy's greedy continuation of the text so far, and the row
carries both versions. Real vLLM, real DeepSpeed step, real gloo broadcast."""

import time

import numpy as np
import pytest
import ray

from mogrpo.batch import Prompt, RewardScores, SamplingSettings
from mogrpo.config import load_config
from mogrpo.config.sections import WeightSyncConfig
from mogrpo.models import resolve_model
from mogrpo.runtime import free_port
from orchestration.actors import start_actor
from orchestration.groups import LearnerGroup, RolloutGroup, gather
from tests.helpers import TINY, hf_greedy, long_prompt

pytestmark = pytest.mark.slow


def _logprobs(path, prompt_ids, response_ids) -> np.ndarray:
    """Log-prob of each response token under the Hugging Face model at `path`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.no_grad():
        logp = model(ids).logits[0, len(prompt_ids) - 1:-1].log_softmax(-1)
    return logp.gather(1, torch.tensor(response_ids)[:, None])[:, 0].numpy()


def test_an_update_mid_response_resumes_with_the_new_weights(ray_local, tmp_path):
    from transformers import AutoTokenizer

    path = str(resolve_model("tiny-llama"))
    prompt = long_prompt(AutoTokenizer.from_pretrained(path))
    cfg = load_config(None, TINY + ["learner.lr=1e-2", "learner.loss.kl_coef=0", "rollout.max_staleness=1",
                                    "rollout.partial_rollout=true"])
    learner = start_actor("learner", cfg, path, master_port=free_port())
    worker = start_actor("rollout", cfg, path)
    gather({"learner-0": learner.ready.remote(), "rollout-0": worker.ready.remote()}, "start")
    learners, rollouts = LearnerGroup([learner]), RolloutGroup([worker], ["rollout-0"], 1)
    rollouts.connect(learners, WeightSyncConfig(bucket_mb=1, timeout_s=30), "float32")

    sampled = ray.get(worker.generate.remote([prompt], SamplingSettings(group_size=4, max_new_tokens=16, seed=1)))
    rewards = np.arange(4, dtype=np.float32)
    ray.get(learner.train_step.remote(sampled.with_rewards(RewardScores({"r": rewards}, rewards))))
    new_policy = ray.get(learner.save_pretrained.remote(str(tmp_path / "policy")))

    n = 320  # long enough to be generating when the update lands
    greedy = SamplingSettings(group_size=1, max_new_tokens=n, temperature=0.0)
    old = ray.get(worker.generate.remote([prompt], greedy)).column("response_token_ids")[0]
    started = time.monotonic()
    in_flight = worker.generate.remote([prompt], greedy)
    time.sleep(0.3)
    rollouts.sync(1)
    row = ray.get(in_flight).table.to_pylist()[0]
    took = time.monotonic() - started
    assert (row["policy_version"], row["policy_version_last"]) == (0, 1), f"generation took {took:.1f}s"

    response = row["response_token_ids"]
    switch = next((i for i, (a, b) in enumerate(zip(old, response)) if a != b), min(len(old), len(response)))
    assert 0 < switch < len(response), (switch, len(response))  # began with the old weights, ended with the new
    resumed = Prompt(0, "", prompt.token_ids + tuple(response[:switch]))
    m = min(24, len(response) - switch)
    assert response[switch:switch + m] == hf_greedy(new_policy, resumed, m)
    # and their log-probs are the new policy's on the whole text: its KV cache was recomputed
    expected = _logprobs(new_policy, prompt.token_ids, response[:switch + m])[switch:]
    np.testing.assert_allclose(row["response_logprobs"][switch:switch + m], expected, atol=1e-3)
    # a request started after the update runs on the new version alone
    after = ray.get(worker.generate.remote([prompt], SamplingSettings(group_size=1, max_new_tokens=8,
                                                                      temperature=0.0))).table.to_pylist()[0]
    assert (after["policy_version"], after["policy_version_last"]) == (1, 1)
