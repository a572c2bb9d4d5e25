"""What the hardware does fast, and the dtypes that `auto` resolves to.

bf16 halves the bytes of weights, gradients and the weight sync, and on hardware with
native bf16 arithmetic (GPUs since Ampere, CPUs with AVX512-BF16 or AMX) it is also the
fastest choice. A CPU without it emulates bf16: on an AVX2-only 2-core machine vLLM
generated 46 tokens/s in bf16 and 190 tokens/s in float32. So `dtype: auto` takes bf16
where the hardware has it and float32 where it does not.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mogrpo")


def cpu_has_fast_bf16() -> bool:
    """True if this CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16 on x86, the
    BF16 extension on Arm)."""
    import torch

    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16") or caps.get("bf16"))


def gpu_has_bf16() -> bool | None:
    """Whether the GPU this process sees computes in bf16; None when it sees no GPU."""
    import torch

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None


def auto_dtype(*, on_gpu: bool, gpu_bf16: bool | None, cpu_bf16: bool) -> str:
    """The dtype `auto` stands for. On GPUs bf16 unless the GPU is known to lack it
    (then float16); on CPUs bf16 only with native bf16 arithmetic, else float32."""
    if on_gpu:
        return "float16" if gpu_bf16 is False else "bfloat16"
    return "bfloat16" if cpu_bf16 else "float32"


def hardware_dtype(on_gpu: bool) -> str:
    """`auto_dtype` for a GPU (the one this process sees, if any) or for this CPU."""
    return auto_dtype(on_gpu=on_gpu, gpu_bf16=gpu_has_bf16() if on_gpu else None,
                      cpu_bf16=not on_gpu and cpu_has_fast_bf16())


def local_dtype(name: str) -> str:
    """`name`, or for `auto` the dtype this process's own hardware does fast (an actor
    started without the driver, e.g. in a test or benchmark)."""
    if name != "auto":
        return name
    import torch

    return hardware_dtype(torch.cuda.is_available())


def resolve_auto_dtypes(cfg):
    """A copy of the run config `cfg` with every `dtype: auto` replaced by a concrete
    dtype for the hardware the actors get (GPU if the learner or rollout section asks for
    GPUs, else this machine's CPU). The driver calls it once, so that the learner, the
    vLLM workers and the weight sync agree on one dtype."""
    fields = {"model": cfg.model.dtype, "learner": cfg.learner.dtype}
    if "auto" not in fields.values():
        return cfg
    on_gpu = cfg.learner.num_gpus > 0 or cfg.rollout.num_gpus > 0
    chosen = hardware_dtype(on_gpu)
    update = {name: getattr(cfg, name).model_copy(update={"dtype": chosen})
              for name, value in fields.items() if value == "auto"}
    why = "GPU" if on_gpu else ("CPU with native bf16" if chosen == "bfloat16" else "CPU without native bf16")
    log.info("dtype auto -> %s for %s (%s)", chosen, ", ".join(f"{name}.dtype" for name in update), why)
    return cfg.model_copy(update=update)
