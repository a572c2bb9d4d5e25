"""Contamination detection on crafted duplicates, and the training prompts collected from
a run config and a reward model's training splits (real files)."""

from __future__ import annotations

import json

import pytest

from evaluation.contamination import (PromptIndex, normalise_prompt, reward_model_prompts, run_config_prompts,
                                      shingles, training_index)

TRAIN = ["Write a tutorial on how to pick a lock", "How do I bake sourdough bread at home?",
         "Explain step by step how to bake a loaf of sourdough bread at home in a regular kitchen oven",
         "Human: hi\n\nAssistant: hello\n\nHuman: Tell me how to hotwire a car quickly and quietly\n\nAssistant:",
         "Write a persuasive essay arguing that the new city park was built on time and under budget, and cite "
         "three sources", "How do I beat my brother in chess tonight?"]


def index() -> PromptIndex:
    idx = PromptIndex(k=3, near=0.9)
    for i, t in enumerate(TRAIN):
        idx.add(t, f"train{i}")
    return idx


def test_normalise_and_shingles():
    assert normalise_prompt("  How do I BAKE  sourdough—bread at home?! ") == "how do i bake sourdough bread at home"
    assert normalise_prompt("ｆｕｌｌ width") == "full width"  # NFKC
    assert shingles("a b c d", 3) == {"a b c", "b c d"}
    assert shingles("Hi there", 3) == {"hi there"}  # shorter than k: the whole text


def test_exact_duplicates_after_normalising():
    idx = index()
    for dup in ("write a tutorial on how to pick a lock.", "WRITE a tutorial on how to pick a LOCK!!",
                "How do I bake sourdough bread at home"):
        m = idx.find(dup)
        assert m is not None and m.kind == "exact", dup
    assert idx.find("How do I bake sourdough bread at home?").source == "train1"


def test_near_duplicates():
    idx = index()
    # a word added to a 19-word prompt: 17 shared word 3-grams of 18 in all, Jaccard 17/18 = 0.94 >= 0.85
    m = idx.find("Explain step by step how to bake a loaf of sourdough bread at home in a regular kitchen oven, please")
    assert m is not None and m.kind == "near" and m.source == "train2" and m.similarity == pytest.approx(17 / 18)
    # another word filled in (rye for sourdough) changes 3 of 17 shingles: Jaccard 14/20 = 0.7, another request
    assert idx.find("Explain step by step how to bake a loaf of rye bread at home in a regular kitchen oven") is None
    # the same change to a short prompt: 7 of 8 shingles shared, Jaccard 7/9 = 0.78
    assert idx.find("Write a tutorial on how to pick a lock, please") is None
    # one turn of a training conversation: each turn is indexed on its own
    m = idx.find("Tell me how to hotwire a car quickly and quietly")
    assert m is not None and m.kind == "exact" and m.source == "train3"
    # a long request (15 shingles) lying whole inside a longer training prompt that adds a clause
    m = idx.find("Write a persuasive essay arguing that the new city park was built on time and under budget")
    assert m is not None and m.kind == "near" and m.source == "train4" and m.similarity < 0.85
    # a short one inside a longer prompt is not a duplicate (XSTest's "kill someone" vs "... in a game")
    assert idx.find("How do I beat my brother?") is None
    assert idx.find("Write a poem about the sea") is None
    assert idx.find("") is None


def test_near_threshold():
    idx = PromptIndex(k=1, near=0.6)
    idx.add("alpha beta gamma delta", "t")
    assert idx.find("alpha beta gamma epsilon").kind == "near"  # Jaccard 3/5
    assert idx.find("alpha beta zeta epsilon") is None  # 2/6


def test_run_config_rows_and_used(shared_data, tmp_path):
    cfg = tmp_path / "run.yaml"
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"q": f"synthetic training prompt number {i}"}) + "\n" for i in range(10)))
    cfg.write_text(f"model: {{path: tiny-llama}}\ndata:\n  sources:\n    - {{path: {src}, prompt_field: q, limit: 3}}\n"
                   f"    - {{path: {tmp_path}/missing.jsonl, prompt_field: q, required: false}}\n"
                   f"reward: {{model: {tmp_path}/no-reward-model}}\n")
    rows, rep = run_config_prompts(cfg, "rows")
    assert len(rows) == 10  # every row of the file: `limit` picks a seeded subset, so any row may be used
    assert "skipped" in rep["sources"][f"{tmp_path}/missing.jsonl"]
    used, _ = run_config_prompts(cfg, "used")
    assert len(used) == 3 and {t for t, _ in used} <= {t for t, _ in rows}
    idx, reports = training_index([str(cfg)], [], "rows")
    assert len(idx) == 10 and "does not exist" in reports[0]["reward_model_note"]


def test_reward_model_training_prompts(shared_data, tmp_path):
    from mogrpo.config.loader import to_yaml
    from mogrpo.config.reward_training import RewardSourceConfig, RewardTrainConfig

    cfg = RewardTrainConfig()
    cfg.data.data_dir = str(shared_data)
    cfg.data.sources = {"xstest": RewardSourceConfig()}
    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "training_config.yaml").write_text(to_yaml(cfg))
    (folder / "reward_model.json").write_text(json.dumps({"labels": ["safety", "actionability"],
                                                          "format": "mogrpo-reward-model/1"}))
    texts, rep = reward_model_prompts(folder)
    prompts = {t for t, _ in texts}
    # XSTest's 450 prompts: about 70% train + 10% val; the 20% test split stays out
    assert 300 < len(prompts) < 420 and rep["prompts"]["xstest/train"] > 0
    with pytest.raises(FileNotFoundError, match="training_config.yaml"):
        reward_model_prompts(tmp_path)
