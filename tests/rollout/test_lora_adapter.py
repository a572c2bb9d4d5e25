"""Pieces of the adapter-only weight sync (learner.lora.sync: adapter) that need no engine:
the folder a worker writes is one vLLM's and peft's loaders accept, ranks map to vLLM's
allowed values, and the config refuses adapter sync without LoRA."""

import json

import pytest
import torch

from mogrpo.config import ConfigError, load_config
from mogrpo.config.learner import LoraConfig
from rollout.weight_engine import write_adapter
from rollout.worker import vllm_max_lora_rank


def test_lora_rank_rounds_up_to_a_rank_vllm_accepts():
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 16, 17, 320, 512)] == [1, 8, 8, 16, 16, 32, 320, 512]
    with pytest.raises(ValueError, match="learner.lora.rank: 513"):
        vllm_max_lora_rank(513)


def test_adapter_sync_needs_lora_enabled():
    with pytest.raises(ConfigError, match="lora.*needs enabled: true"):
        load_config(None, ["learner.lora.sync=adapter"])
    cfg = load_config(None, ["learner.lora.sync=adapter", "learner.lora.enabled=true"])
    assert cfg.learner.lora.syncs_adapters and not LoraConfig(enabled=True).syncs_adapters


def test_written_adapter_loads_in_peft_and_vllm(tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    from safetensors.torch import load_file
    from vllm.lora.peft_helper import PEFTHelper

    kwargs = LoraConfig(enabled=True, rank=4, alpha=8, target_modules=["q_proj"]).peft_kwargs()
    tensors = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 16),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(16, 4)}
    folder = write_adapter(tmp_path / "adapter", tensors, kwargs)

    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not list(tmp_path.glob(".adapter.tmp.*"))  # written atomically, no leftovers
    loaded = load_file(folder / "adapter_model.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert PeftLoraConfig(**{k: v for k, v in config.items() if k != "peft_type"}).r == 4
    helper = PEFTHelper.from_local_dir(str(folder), max_position_embeddings=512)
    assert (helper.r, helper.vllm_lora_scaling_factor) == (4, 2.0)
