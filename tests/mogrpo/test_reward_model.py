"""The model's pure pieces (truncation rule, masks) and the public scoring API."""

import json

import numpy as np
import pytest
import torch

from mogrpo.reward_model import RewardModelError, load_reward_model, read_labels
from mogrpo.reward_model import HEADS_FILE, SPEC_FILE, collate, encode_pairs, truncate_pair


@pytest.mark.parametrize(
    "n_prompt, n_response, budget, expected",
    [
        (3, 4, 10, (3, 4)),  # fits: nothing cut
        (20, 4, 10, (6, 4)),  # long prompt, short response: the response is whole, the prompt gets the rest
        (3, 20, 10, (3, 7)),  # short prompt, long response: the prompt is whole, the response is cut
        (20, 20, 10, (5, 5)),  # both long: half each (prompt end, response start)
        (0, 20, 10, (0, 10)),  # no prompt
        (11, 20, 10, (5, 5)),
    ],
)
def test_truncate_pair(n_prompt, n_response, budget, expected):
    assert truncate_pair(n_prompt, n_response, budget) == expected
    kp, kr = expected
    assert kp + kr <= budget


def test_encode_pairs_keeps_prompt_end_and_response_start(reward_model):
    tok = reward_model.tokenizer
    prompt = "apple banana cherry grape lemon mango orange peach"
    response = "one two three four five six seven eight"
    # max_length 9 = 3 special tokens + a budget of 6: both sides are long, so 3 + 3.
    enc = encode_pairs(tok, [prompt, "hi"], [response, "ok"], max_length=9)
    assert enc.truncated == 1
    assert tok.decode(enc.ids[0]) == "[CLS] mango orange peach [SEP] one two three [SEP]"
    assert enc.n_prompt == [3, 1]
    assert tok.decode(enc.ids[1]) == "[CLS] hi [SEP] ok [SEP]"


def test_collate_masks():
    # Row 0: [CLS] p p [SEP] r r r [SEP] (2 prompt tokens, 3 response tokens); row 1 is shorter
    # and padded. head_tokens=2: only the first two response tokens are in the head mask.
    ids = [[101, 5, 6, 102, 7, 8, 9, 102], [101, 102, 7, 102]]
    b = collate(ids, [2, 0], pad_id=0, head_tokens=2)
    assert b["input_ids"][1].tolist() == [101, 102, 7, 102, 0, 0, 0, 0]
    assert b["attention_mask"].tolist() == [[1] * 8, [1, 1, 1, 1, 0, 0, 0, 0]]
    assert b["prompt_mask"].tolist() == [[0, 1, 1, 0, 0, 0, 0, 0], [0] * 8]
    assert b["response_mask"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0, 0]]
    assert b["head_mask"].tolist() == [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0, 0]]


def test_saved_folder_layout_and_roundtrip(reward_model_dir, reward_model):
    names = {p.name for p in reward_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", HEADS_FILE, SPEC_FILE, "metrics.json", "training_config.yaml",
            "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)  # no pickles
    assert not [p for p in reward_model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    assert read_labels(reward_model_dir) == ["safety", "actionability", "meaningfulness", "politeness"]
    assert json.loads((reward_model_dir / "metrics.json").read_text()) == {"note": "random heads"}
    again = load_reward_model(reward_model_dir, threads=1)
    prompts, responses = ["How do I boil an egg?"] * 2, ["Simmer it for nine minutes.", "I can't help with that."]
    a, b = reward_model.score(prompts, responses), again.score(prompts, responses)
    for label in a:
        np.testing.assert_allclose(a[label], b[label], rtol=1e-6)


def test_score_contract(reward_model):
    prompts = ["Write a haiku.", "Write a haiku.", "", "Why is the sky blue?"]
    responses = ["Leaves fall, wind hums.", "   ", "Thanks so much for your help!", "Scattering of sunlight."]
    out = reward_model.score(prompts, responses, batch_size=2, empty_score=0.25)
    assert list(out) == reward_model.labels
    for label, values in out.items():
        assert values.shape == (4,) and values.dtype == np.float32
        assert ((values >= 0) & (values <= 1)).all()
        assert values[1] == 0.25  # a blank response gets the defined score, unencoded
    # Batching and order do not change a pair's score (padding is masked).
    single = reward_model.score(prompts[3:], responses[3:])
    for label in out:
        assert out[label][3] == pytest.approx(single[label][0], abs=1e-5)


def test_score_bad_inputs(reward_model):
    with pytest.raises(RewardModelError, match="2 prompts but 1 responses"):
        reward_model.score(["a", "b"], ["c"])
    with pytest.raises(RewardModelError, match="response 1 is a NoneType"):
        reward_model.score(["a", "b"], ["c", None])


def test_non_finite_score_names_sample(reward_model_dir):
    model = load_reward_model(reward_model_dir, threads=1)
    with torch.no_grad():
        model.heads["politeness"].net[-1].bias.fill_(float("nan"))
    with pytest.raises(RewardModelError, match=r"label 'politeness' scored nan for sample 0 \(response 'fine'\)"):
        model.score(["q"], ["fine"])


def test_not_a_reward_model_folder(tmp_path):
    with pytest.raises(RewardModelError, match="reward_model.json is missing"):
        load_reward_model(tmp_path)


def test_saved_spec_and_training_config_agree():
    # ModelSpec is the on-disk format of trained models (reward_model.json); the training
    # config declares the same architecture fields, with the same defaults.
    from dataclasses import MISSING, fields

    from mogrpo.config.reward_training import RewardModelArchConfig
    from mogrpo.reward_model import ModelSpec

    arch = RewardModelArchConfig()
    spec_defaults = {f.name: f.default_factory() if f.default is MISSING else f.default
                     for f in fields(ModelSpec) if f.name != "labels"}
    for name, value in arch.model_dump(exclude={"encoder", "labels"}).items():
        assert spec_defaults[name] == value, name
