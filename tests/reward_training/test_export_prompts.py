"""A reward model's training prompts exported for a GRPO run: the split the model's own
training config assigns, labelled harmful / benign, and never its test split by default."""

import csv
import json
import shutil

import pytest

from mogrpo.errors import UserError
from mogrpo.reward_model import SPEC_FILE, TRAIN_CONFIG_FILE
from reward_training.sources import assign_split
from reward_training.export_prompts import main, trained_prompts


@pytest.fixture
def xstest_model(tmp_path, shared_data, reward_model_dir):
    """A reward-model folder whose training config read XSTest alone (no weights are needed)."""
    folder = tmp_path / "rm"
    folder.mkdir()
    shutil.copy(reward_model_dir / SPEC_FILE, folder / SPEC_FILE)
    (folder / TRAIN_CONFIG_FILE).write_text(
        f"model: {{labels: [safety, harmful_request]}}\n"
        f"data: {{data_dir: {shared_data}, split_seed: 3, holdout: [], sources: {{xstest: {{}}}}}}\n")
    return folder


def test_exports_the_trained_splits_of_xstest(xstest_model, tmp_path):
    rows = trained_prompts(xstest_model, "xstest")
    by_prompt = {r["prompt"]: r for r in rows}
    assert len(by_prompt) == len(rows) and {r["split"] for r in rows} == {"train", "val"}
    assert {r["request"] for r in rows} == {"harmful", "benign"}
    test = trained_prompts(xstest_model, "xstest", ("test",))
    assert not {r["prompt"] for r in test} & set(by_prompt)
    assert 300 < len(rows) < 400 and 60 < len(test) < 130  # 450 XSTest prompts, ~20% test

    out = tmp_path / "prompts.jsonl"
    assert main(["--model", str(xstest_model), "--source", "xstest", "--out", str(out)]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == rows


def test_split_follows_the_models_seed(xstest_model, shared_data):
    rows = trained_prompts(xstest_model, "xstest", ("train", "val", "test"))
    assert len(rows) == 450
    completions = list(csv.DictReader(open(shared_data / "xstest" / "model_completions" / "xstest_v2_completions_gpt4.csv")))
    split_of = {r["prompt"]: assign_split("xstest", r["id"], 3, 0.1, 0.2) for r in completions}
    assert all(split_of[r["prompt"]] == r["split"] for r in rows)


def test_a_source_the_model_did_not_train_on_is_named(xstest_model, tmp_path):
    with pytest.raises(UserError, match=r"--source 'hh_rlhf'.*did not train on it \(its sources: \['xstest'\]\)"):
        trained_prompts(xstest_model, "hh_rlhf")
    assert main(["--model", str(tmp_path / "absent"), "--source", "xstest", "--out", str(tmp_path / "x.jsonl")]) == 2
