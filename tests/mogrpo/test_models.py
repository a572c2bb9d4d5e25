"""Model references: built-ins, local folders, hub ids, and atomic materialisation."""

import pytest

from mogrpo.models import ModelNotFoundError, build_atomically, resolve_model


def test_builtin_encoder_is_a_hf_folder():
    path = resolve_model("minilm-l6")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def test_builtin_smollm2_converts_to_safetensors():
    path = resolve_model("smollm2-135m-instruct")
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")) and not list(path.glob("*.gguf"))
    import json

    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config


def test_local_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_path_names_the_reference(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        resolve_model(str(tmp_path / "missing-model"))


def test_unreachable_hub_id_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Hugging Face hub failed"):
        resolve_model("some-org/some-model-that-is-not-here")


def test_interrupted_build_leaves_no_folder(tmp_path):
    target = tmp_path / "model"

    def crash(out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atomically(target, crash)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "temporary folder left behind"

    build_atomically(target, lambda out: (out / "config.json").write_text("{}"))
    assert (target / "config.json").is_file()
