"""Building the learner's DeepSpeed engine (policy, optional LoRA, optional reference
model, optimizer, LR schedule) and exporting its weights in Hugging Face names."""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

import torch

from mogrpo.atomic import write_folder_atomically
from mogrpo.config.learner import LearnerConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json")


def torch_dtype(name: str) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


def deepspeed_config(cfg: LearnerConfig, world_size: int) -> dict:
    """The DeepSpeed config. Gradient accumulation is ours (token-budget micro-batches),
    so DeepSpeed sees one micro-batch per step and we mark the boundary ourselves."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "gradient_clipping": cfg.grad_clip,
        "bf16": {"enabled": cfg.dtype == "bfloat16"},
        "fp16": {"enabled": cfg.dtype == "float16"},
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_lambda(warmup_steps: int, total_steps: int, schedule: str):
    """Multiplier of the peak LR at optimizer step s: linear warm-up, then constant,
    cosine or linear decay to zero at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return factor


def load_policy(model_path: str, cfg: LearnerConfig, trust_remote_code: bool):
    """The trainable policy: the model, wrapped with LoRA adapters when enabled."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch_dtype(cfg.dtype), trust_remote_code=trust_remote_code
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lora.enabled:
            model.enable_input_require_grads()
    if cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        model = get_peft_model(model, PeftLoraConfig(**cfg.lora.peft_kwargs()))
    return model


def load_reference(model_path: str, cfg: LearnerConfig, trust_remote_code: bool):
    """A frozen copy of the initial policy, or None where none is needed: with kl_coef 0,
    and with LoRA (the reference is the policy with its adapters switched off)."""
    if cfg.loss.kl_coef == 0 or cfg.lora.enabled:
        return None
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch_dtype(cfg.dtype), trust_remote_code=trust_remote_code
    )
    ref.eval().requires_grad_(False)
    return ref


def build_engine(model, cfg: LearnerConfig, world_size: int, total_optimizer_steps: int):
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "fused_adam":
        from deepspeed.ops.adam import FusedAdam

        optimizer = FusedAdam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    else:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.warmup_steps, total_optimizer_steps, cfg.lr_schedule)
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, world_size)
    )
    return engine, scheduler


@contextlib.contextmanager
def full_parameters(module: torch.nn.Module, zero_stage: int):
    """Every rank sees whole parameters inside (ZeRO-3 gathers them all first: gather,
    then send; never interleave the two)."""
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def hf_weights(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) in the base model's Hugging Face names, with LoRA merged in
    (W + scale * B @ A) and adapters left untouched. Call inside `full_parameters`."""
    from peft import PeftModel

    if not isinstance(module, PeftModel):
        return [(name, p.detach()) for name, p in module.named_parameters()]
    from peft.tuners.lora import LoraLayer

    base = module.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, sub in base.named_modules():
        if isinstance(sub, LoraLayer) and sub.active_adapters:
            weight = sub.get_base_layer().weight.detach()
            for adapter in sub.active_adapters:
                weight = weight + sub.get_delta_weight(adapter).to(weight.dtype)
            merged[f"{name}.weight"] = weight
    out = []
    for name, p in base.named_parameters():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        out.append((name, merged.get(name, p.detach())))
    return out


def adapter_weights(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The LoRA adapters alone, named as in a saved peft adapter (`...q_proj.lora_A.weight`).
    Call inside `full_parameters`."""
    from peft import get_peft_model_state_dict

    return [(name, t.detach()) for name, t in get_peft_model_state_dict(module).items()]


def save_hf_folder(weights: list[tuple[str, torch.Tensor]], config, source_dir: str, target: Path) -> Path:
    """Write a loadable Hugging Face folder (safetensors, config, tokenizer) atomically."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in weights}
        if getattr(config, "tie_word_embeddings", False):
            tensors.pop("lm_head.weight", None)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (Path(source_dir) / name).is_file():
                shutil.copy2(Path(source_dir) / name, tmp / name)

    return write_folder_atomically(target, fill)
