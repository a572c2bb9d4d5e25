"""Fixtures of the reward-service tests: a small reward model folder (real MiniLM encoder,
random heads, short max length) built once per session."""

from __future__ import annotations

import pytest

LABELS = ["safety", "actionability", "meaningfulness", "politeness"]


@pytest.fixture(scope="session")
def reward_model_dir(tmp_path_factory):
    import torch

    from reward_service.model import ModelSpec, build_reward_model

    torch.set_num_threads(1)
    model = build_reward_model("minilm-l6", ModelSpec(labels=list(LABELS), max_length=64, head_hidden=8), seed=0)
    return model.save(tmp_path_factory.mktemp("rm") / "reward-model", train_config_yaml="note: test model\n",
                      metrics={"note": "random heads"})


@pytest.fixture(scope="session")
def reward_model(reward_model_dir):
    from reward_service import load_reward_model

    return load_reward_model(reward_model_dir, threads=1)
