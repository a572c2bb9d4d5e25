"""Moving a trained model along the line from its base: hand-computed tensors, then real folders."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from mogrpo.model_merge import main, merge_model_folders, merge_state_dicts
from mogrpo.models import ModelNotFoundError, resolve_model


def test_alpha_interpolates_and_extrapolates_by_hand():
    base = {"w": torch.tensor([1.0, 2.0, -1.0])}
    tuned = {"w": torch.tensor([2.0, 2.0, 1.0])}  # step = [1, 0, 2]
    assert merge_state_dicts(base, tuned, 0.0)["w"].tolist() == [1.0, 2.0, -1.0]
    assert merge_state_dicts(base, tuned, 1.0)["w"].tolist() == [2.0, 2.0, 1.0]
    assert merge_state_dicts(base, tuned, 0.5)["w"].tolist() == [1.5, 2.0, 0.0]  # base + step / 2
    assert merge_state_dicts(base, tuned, 2.0)["w"].tolist() == [3.0, 2.0, 3.0]  # base + 2 step


def test_several_tuned_are_averaged_before_the_step_by_hand():
    base = {"w": torch.tensor([0.0, 4.0])}
    a, b = {"w": torch.tensor([2.0, 4.0])}, {"w": torch.tensor([4.0, 0.0])}  # mean [3, 2]
    assert merge_state_dicts(base, [a, b], 1.0)["w"].tolist() == [3.0, 2.0]
    assert merge_state_dicts(base, [a, b], 2.0)["w"].tolist() == [6.0, 0.0]  # base + 2 (mean - base)
    assert merge_state_dicts(base, [a], 1.0)["w"].tolist() == merge_state_dicts(base, a, 1.0)["w"].tolist()


def test_bf16_step_is_taken_in_float32_and_kept_in_the_tuned_dtype():
    # bf16 keeps 8 significant bits: from 256 to 512 its numbers step by 2, so 256 + 3 * 2 is exact.
    base = {"w": torch.tensor([256.0], dtype=torch.bfloat16)}
    tuned = {"w": torch.tensor([258.0], dtype=torch.bfloat16)}
    merged = merge_state_dicts(base, tuned, 3.0)["w"]
    assert merged.dtype == torch.bfloat16 and merged.item() == 262.0  # 256 + 3 * 2


def test_mismatched_weights_are_named():
    with pytest.raises(ValueError, match=r"only in tuned \['extra'\]"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2), "extra": torch.zeros(1)}, 1.0)
    with pytest.raises(ValueError, match=r"weight 'w': base shape \(2,\) != tuned #1 shape \(3,\)"):
        merge_state_dicts({"w": torch.zeros(2)}, [{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], 1.0)
    with pytest.raises(ValueError, match="no tuned weights"):
        merge_state_dicts({"w": torch.zeros(2)}, [], 1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        merge_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, float("nan"))


def test_merged_folder_is_a_model_transformers_loads(tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir = resolve_model("tiny-llama")
    base = load_file(base_dir / "model.safetensors")
    torch.manual_seed(0)

    def tuned_folder(name):
        folder = tmp_path / name
        folder.mkdir()
        for f in base_dir.iterdir():
            if f.suffix != ".safetensors":
                (folder / f.name).write_bytes(f.read_bytes())
        weights = {k: (v.float() + 0.01 * torch.randn_like(v.float())).to(v.dtype) for k, v in base.items()}
        save_file(weights, str(folder / "model.safetensors"))
        return folder, weights

    tuned_dir, tuned = tuned_folder("tuned")

    main(["--base", "tiny-llama", "--tuned", str(tuned_dir), "--alpha", "2", "--out", str(tmp_path / "x2")])

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "x2", dtype=torch.float32)
    name = "model.layers.0.mlp.down_proj.weight"
    expected = (base[name].float() + 2 * (tuned[name].float() - base[name].float())).to(base[name].dtype).float()
    assert torch.equal(model.state_dict()[name], expected)
    assert (tmp_path / "x2" / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".x2.tmp.*"))  # written atomically: no temp folder left

    other_dir, other = tuned_folder("other")
    main(["--base", "tiny-llama", "--tuned", str(tuned_dir), str(other_dir), "--alpha", "1", "--out", str(tmp_path / "avg")])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "avg", dtype=torch.float32)
    mean = ((tuned[name].float() + other[name].float()) / 2).to(base[name].dtype).float()
    assert torch.equal(model.state_dict()[name], mean)


def test_a_folder_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="model.safetensors is missing"):
        merge_model_folders("tiny-llama", str(tmp_path), 2.0, tmp_path / "out")
