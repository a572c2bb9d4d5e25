"""Sizing a CPU worker's KV cache from the run (`rollout.cpu_kv_cache_gib: auto`)."""

import pytest

from mogrpo.config import ConfigError, load_config
from rollout.worker import cpu_kv_cache_bytes, kv_bytes_per_token

SMOLLM2 = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3}


def test_bytes_per_token_by_hand():
    assert kv_bytes_per_token(SMOLLM2, "bfloat16") == 2 * 30 * 3 * 64 * 2  # K and V, 30 layers, 3 heads of 64
    assert kv_bytes_per_token(SMOLLM2, "float32") == 2 * 30 * 3 * 64 * 4


def test_auto_holds_one_call_of_sequences_plus_a_quarter():
    run = load_config("cluster_configs/cpu_smoke.yaml", ["rollout.prompts_per_step=8", "rollout.max_new_tokens=64"])
    # one worker, one call: 8 groups x 4 sequences x (192 prompt + 64 new) tokens
    assert cpu_kv_cache_bytes(run, SMOLLM2, "bfloat16") == int(1.25 * 8 * 4 * 256 * 23040)
    two = load_config("cluster_configs/cpu_smoke.yaml", ["rollout.prompts_per_step=8", "rollout.max_new_tokens=64",
                                                         "rollout.num_workers=2"])
    assert cpu_kv_cache_bytes(two, SMOLLM2, "bfloat16") == int(1.25 * 4 * 4 * 256 * 23040)


def test_auto_holds_at_least_one_full_length_sequence():
    run = load_config("cluster_configs/cpu_smoke.yaml", ["rollout.prompts_per_step=1", "rollout.group_size=2",
                                                         "data.max_prompt_tokens=16", "rollout.max_new_tokens=8",
                                                         "model.max_model_len=4096"])
    assert cpu_kv_cache_bytes(run, SMOLLM2, "bfloat16") == int(1.25 * 4096 * 23040)


def test_an_explicit_size_wins_and_must_be_positive():
    run = load_config("cluster_configs/cpu_smoke.yaml", ["rollout.cpu_kv_cache_gib=0.5"])
    assert cpu_kv_cache_bytes(run, SMOLLM2, "bfloat16") == 2**29
    with pytest.raises(ConfigError, match="rollout.cpu_kv_cache_gib"):
        load_config("cluster_configs/cpu_smoke.yaml", ["rollout.cpu_kv_cache_gib=0"])
