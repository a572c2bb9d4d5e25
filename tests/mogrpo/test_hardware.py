"""`dtype: auto`: bf16 where the hardware computes in bf16, float32 on CPUs that emulate it."""

import pytest

from mogrpo import hardware
from mogrpo.config import load_config


@pytest.mark.parametrize(("on_gpu", "gpu_bf16", "cpu_bf16", "expected"), [
    (True, True, False, "bfloat16"),
    (True, None, False, "bfloat16"),  # the driver sees no GPU: assume a GPU with bf16
    (True, False, False, "float16"),  # e.g. a V100 or T4
    (False, None, True, "bfloat16"),  # AVX512-BF16 / AMX
    (False, None, False, "float32"),  # AVX2 only: bf16 is emulated
])
def test_auto_dtype(on_gpu, gpu_bf16, cpu_bf16, expected):
    assert hardware.auto_dtype(on_gpu=on_gpu, gpu_bf16=gpu_bf16, cpu_bf16=cpu_bf16) == expected


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_driver_resolves_auto_for_the_cpu(monkeypatch, cpu_bf16):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: cpu_bf16)
    cfg = load_config("cluster_configs/cpu_smoke.yaml", [])
    assert (cfg.model.dtype, cfg.learner.dtype) == ("auto", "auto")
    resolved = hardware.resolve_auto_dtypes(cfg)
    expected = "bfloat16" if cpu_bf16 else "float32"
    assert (resolved.model.dtype, resolved.learner.dtype) == (expected, expected)
    assert cfg.model.dtype == "auto"  # a copy; the loaded config is unchanged


def test_driver_resolves_auto_for_gpu_sections_and_keeps_explicit_dtypes(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    cfg = load_config(None, ["learner.num_gpus=1", "rollout.num_gpus=1", "model.dtype=float32"])
    resolved = hardware.resolve_auto_dtypes(cfg)
    assert resolved.model.dtype == "float32"  # explicit: kept
    assert resolved.learner.dtype == ("bfloat16" if hardware.gpu_has_bf16() is not False else "float16")


def test_this_machine_matches_torch_capabilities():
    import torch

    caps = torch.cpu.get_capabilities()
    assert hardware.cpu_has_fast_bf16() == bool(caps.get("avx512_bf16") or caps.get("amx_bf16") or caps.get("bf16"))
    assert hardware.local_dtype("float16") == "float16"
    assert hardware.local_dtype("auto") in ("bfloat16", "float32", "float16")
