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


@pytest.mark.parametrize(("gpu_bf16", "expected"), [(True, "bfloat16"), (None, "bfloat16"), (False, "float16")])
def test_driver_resolves_auto_for_gpu_sections_and_keeps_explicit_dtypes(monkeypatch, gpu_bf16, expected):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(hardware, "gpu_has_bf16", lambda: gpu_bf16)
    cfg = load_config(None, ["learner.num_gpus=1", "rollout.num_gpus=1", "model.dtype=float32"])
    resolved = hardware.resolve_auto_dtypes(cfg)
    assert resolved.model.dtype == "float32"  # explicit: kept
    assert resolved.learner.dtype == expected


@pytest.mark.parametrize(("caps", "expected"), [
    ({"avx2": True, "avx512": True}, False),  # AVX-512 without its bf16 extension
    ({"avx512": True, "avx512_bf16": True}, True),
    ({"amx_bf16": True}, True),
    ({"bf16": True}, True),  # Arm with BF16
    ({}, False),
])
def test_cpu_bf16_from_torch_capabilities(monkeypatch, caps, expected):
    import torch

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert hardware.cpu_has_fast_bf16() is expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.local_dtype("auto") == ("bfloat16" if expected else "float32")
    assert hardware.local_dtype("float16") == "float16"  # explicit: kept
