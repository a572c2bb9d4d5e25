"""Shared fixtures: a private Ray instance for the session and paths to shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOGRPO_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.pop("RAY_ADDRESS", None)  # tests never join a cluster started outside them
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """A private Ray instance (never attaches to a cluster started with `ray start`)."""
    import ray

    from mogrpo.runtime import init_ray, worker_env

    tmp = tempfile.mkdtemp(prefix="mogrpo-test-ray-")
    os.environ["MOGRPO_RAY_TMP"] = tmp
    init_ray(None, num_cpus=4, num_gpus=0, runtime_env={"env_vars": worker_env(1)})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def quick_reward_model(tmp_path_factory):
    """A reward model fitted once per session by the built-in quick routine (~1 min)."""
    from reward_training.train import ensure_reward_model

    return ensure_reward_model(tmp_path_factory.mktemp("reward") / "quick-model", fit_if_missing=True)


REWARD_LABELS = ["safety", "actionability", "meaningfulness", "politeness"]


@pytest.fixture(scope="session")
def reward_model_dir(tmp_path_factory):
    import torch

    from mogrpo.reward_model import ModelSpec, build_reward_model

    torch.set_num_threads(1)
    model = build_reward_model("minilm-l6", ModelSpec(labels=list(REWARD_LABELS), max_length=64, head_hidden=8), seed=0)
    return model.save(tmp_path_factory.mktemp("rm") / "reward-model", train_config_yaml="note: test model\n",
                      metrics={"note": "random heads"})


@pytest.fixture(scope="session")
def reward_model(reward_model_dir):
    from mogrpo.reward_model import load_reward_model

    return load_reward_model(reward_model_dir, threads=1)
