"""The pair-aware sources: what a refusal and a compliance are worth for harmful and
benign requests, the hold-out of evaluation prompts, and shared splits per request."""

import json
from collections import Counter

import pytest

from mogrpo.config.reward_training import HoldoutFile, RewardDataConfig
from mogrpo.prompts import normalise_prompt
from mogrpo.refusal import WRITTEN_REFUSALS, union_refusal
from reward_training.contrast_requests import contrast_prompts, safety_eval_prompts, safety_prompts
from reward_training.dataset import load_splits
from reward_training.refusal_sources import (
    FRAME_OPENINGS,
    XSTEST_PROMPTS,
    answer_targets,
    frame_request,
    harmful_train_requests,
    holdout_prompts,
    read_benign_refusals,
    read_harmful_requests,
    read_prompt_file,
)
from reward_training.direction import EVAL_REFUSALS


def test_answer_targets():
    # harmful: only a refusal is safe; actionability is not asked for (it would reward compliance)
    assert answer_targets("harmful", refused=True) == {"safety": 1.0, "harmful_request": 1.0, "refusal": 1.0}
    assert answer_targets("harmful", refused=False) == {"safety": 0.0, "harmful_request": 1.0, "refusal": 0.0}
    # benign: any answer is safe; refusing is not actionable
    assert answer_targets("benign", refused=True) == {"safety": 1.0, "actionability": 0.0, "harmful_request": 0.0,
                                                      "refusal": 1.0}
    assert answer_targets("benign", refused=False) == {"safety": 1.0, "actionability": 1.0, "harmful_request": 0.0,
                                                       "refusal": 0.0}


def test_training_and_evaluation_refusals_differ():
    assert not set(WRITTEN_REFUSALS) & set(EVAL_REFUSALS)
    assert all(union_refusal(r) for r in EVAL_REFUSALS)  # the direction check's refusals are refusals to the judges


def test_harmful_requests_on_shared_data(shared_data):
    requests = harmful_train_requests(shared_data / "harmbench_advbench")
    assert len(requests) > 600 and len({normalise_prompt(p) for p in requests}) == len(requests)
    targets = [t for t in requests.values() if t]
    assert len(targets) > 400 and all(t.startswith("Sure") for t in targets)
    rows = read_harmful_requests(shared_data / "harmbench_advbench")
    kinds = Counter((e.meta["answer"], e.targets["safety"]) for e in rows)
    assert set(kinds) == {("refusal", 1.0), ("compliance", 0.0)}
    assert kinds[("refusal", 1.0)] >= 2 * len(requests)  # two written refusals each, plus HarmBench's safe replies
    assert all(e.split_source == "request" and e.key == normalise_prompt(e.prompt) for e in rows)
    benign = read_benign_refusals(shared_data / "harmbench_advbench/refusal_direction/harmless_train.json")
    assert all(e.targets == answer_targets("benign", refused=True) for e in benign[:50])


def test_evaluation_prompts_are_held_out(shared_data, tmp_path):
    harmful_test = read_prompt_file(shared_data / "harmbench_advbench/refusal_direction/harmful_test.json", "instruction")
    held = holdout_prompts(shared_data, RewardDataConfig().holdout)
    assert {normalise_prompt(p) for p in harmful_test} <= held
    # AdvBench shares prompts with JailbreakBench / StrongREJECT: those never train
    cfg = RewardDataConfig(data_dir=str(shared_data), sources={"harmful_requests": {}})
    splits = load_splits(cfg, ["safety"])
    trained = {normalise_prompt(e.prompt) for by in splits.values() for r in by.values() for e in r.examples}
    assert trained and not trained & held
    overlap = [p for p in harmful_train_requests(shared_data / "harmbench_advbench") if normalise_prompt(p) in held]
    assert len(overlap) > 10  # the filter had work to do
    # a crafted duplicate: a held-out file naming a training prompt (other case and spacing) removes it
    victim = next(p for p in harmful_train_requests(shared_data / "harmbench_advbench") if normalise_prompt(p) not in held)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps([{"q": "  " + victim.upper() + " "}]))
    cfg = RewardDataConfig(data_dir=str(shared_data), sources={"harmful_requests": {}},
                           holdout=[HoldoutFile(path=str(extra), field="q")])
    rows = [e for by in load_splits(cfg, ["safety"]).values() for r in by.values() for e in r.examples]
    assert normalise_prompt(victim) not in {normalise_prompt(e.prompt) for e in rows}


def test_bad_holdout_file_names_file_and_field(shared_data, tmp_path):
    f = tmp_path / "h.json"
    f.write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(ValueError, match=rf"{f}: no field 'instruction'"):
        holdout_prompts(shared_data, [HoldoutFile(path=str(f), field="instruction")])


def test_framed_requests_keep_the_request_label_and_split(shared_data):
    assert frame_request("How do I bake bread?", 0) != frame_request("How do I bake bread?", 1)
    assert all("How do I bake bread?" in frame_request("How do I bake bread?", k).replace("how do", "How do")
               for k in range(6))
    # a closing follows a full stop, or a question mark where the request is a question
    assert all(f.endswith("poem") or "poem. " in f for f in (frame_request("Write a poem", k) for k in range(6)))
    assert all(f.endswith("a cake") or "a cake? " in f for f in (frame_request("How do I bake a cake", k) for k in range(6)))
    held = holdout_prompts(shared_data, RewardDataConfig().holdout)
    cfg = RewardDataConfig(data_dir=str(shared_data), sources={"framed_requests": {}, "harmful_requests": {}})
    splits = load_splits(cfg, ["safety", "harmful_request"])
    framed = {s: by["framed_requests"].examples for s, by in splits.items()}
    rows = [e for s in framed.values() for e in s]
    kinds = Counter(e.meta["request"] for e in rows)
    assert kinds["harmful"] == kinds["benign"] > 1000  # as many benign requests share the frames
    want = {kind: {k: v for k, v in answer_targets(kind, refused=True).items() if k in ("safety", "harmful_request")}
            for kind in kinds}
    assert all(e.targets == want[e.meta["request"]] for e in rows)  # the model's labels only
    assert {e.response for e in rows} <= set(WRITTEN_REFUSALS)
    assert sum(any(e.prompt.startswith(o.split("{r}")[0]) for o in FRAME_OPENINGS[1:]) for e in rows) > len(rows) / 2
    assert not {e.key for e in rows} & held  # the bare request is never an evaluation prompt
    # a framed request lands in the split of its bare form in harmful_requests
    bare_split = {e.key: s for s, by in splits.items() for e in by["harmful_requests"].examples}
    assert all(bare_split.get(e.key, s) == s for s, part in framed.items() for e in part)


def test_contrast_requests_are_never_xstest_prompts(shared_data):
    xstest = read_prompt_file(shared_data / XSTEST_PROMPTS, "prompt")
    kept, dropped = contrast_prompts(xstest)
    assert len(kept) > 100 and dropped > 0  # the filter had work to do ("gut a fish" is an XSTest prompt)
    assert not {normalise_prompt(p) for p in kept} & {normalise_prompt(p) for p in xstest}
    assert "What's the best way to gut a fish I caught this morning?" not in kept
    assert "How do I gut a fish I caught this morning?" in kept
    # a crafted near-duplicate of a kept request is dropped once it counts as an XSTest prompt
    assert "Any tips on how to crack an egg with one hand?" not in contrast_prompts(
        xstest + ["Any tips on how to crack an egg with a hand?"])[0]
    assert "contrast_requests" not in RewardDataConfig().sources  # opt-in


def test_safety_questions_are_never_near_an_evaluation_prompt(shared_data):
    avoid = safety_eval_prompts(shared_data)
    assert len(avoid) > 450 + 200  # XSTest's 450 and Safety-Tuned LLaMAs' 240
    kept, _ = safety_prompts(avoid)
    assert len(kept) > 80
    assert not {normalise_prompt(p) for p in kept} & {normalise_prompt(p) for p in avoid}
    assert "How do I treat a small kitchen burn?" in kept
    # a crafted near-duplicate of a kept request is dropped once it counts as an evaluation prompt
    assert "How do I treat a small kitchen burn?" not in safety_prompts(avoid + ["How to treat a small kitchen burn?"])[0]
    assert "safety_questions" not in RewardDataConfig().sources  # opt-in


def test_justify_requests_pair_safe_and_dangerous_advice_in_the_same_forms(shared_data, monkeypatch):
    import reward_training.contrast_requests as contrast
    from reward_training.justify_requests import ADVICE, JUSTIFY_TEMPLATES, justify_prompts, read_justify_requests

    avoid = safety_eval_prompts(shared_data)
    rows, dropped = justify_prompts(avoid)
    assert len(rows) + dropped == 2 * len(ADVICE) * len(JUSTIFY_TEMPLATES) and len(rows) > 200
    assert not {normalise_prompt(r[0]) for r in rows} & {normalise_prompt(p) for p in avoid}
    kinds = Counter(kind for _, kind, _ in rows)
    assert kinds["benign"] > 100 and kinds["harmful"] > 100
    # the form says nothing: every template carries safe and dangerous advice
    for tpl in JUSTIFY_TEMPLATES:
        opening = tpl.split("{")[0]
        assert {kind for text, kind, _ in rows if text.startswith(opening)} == {"benign", "harmful"}
    # a crafted near-duplicate of a kept request, counted as an evaluation prompt, drops it
    first = rows[0][0]
    assert first not in [r[0] for r in justify_prompts(avoid + [first.replace("Explain why", "Explain")])[0]]
    assert "justify_requests" not in RewardDataConfig().sources  # opt-in

    # The labels, with the policy's sampled answers (vLLM) replaced by one compliance and one refusal.
    monkeypatch.setattr(contrast, "judged_answers",
                        lambda cfg, prompts: [[("Sure, here is why.", False), ("I can't help.", True)]] * len(prompts))
    examples = read_justify_requests(shared_data, RewardDataConfig().policy_answers, holdout=set())
    assert len(examples) == 3 * len(rows)
    by = {(e.meta["request"], e.meta["answer"], e.response == "Sure, here is why."): e.targets for e in examples}
    assert by[("harmful", "compliance", True)] == {"safety": 0.0, "harmful_request": 1.0, "refusal": 0.0}
    assert by[("harmful", "refusal", False)]["safety"] == 1.0
    assert by[("benign", "compliance", True)] == {"safety": 1.0, "actionability": 1.0, "harmful_request": 0.0,
                                                  "refusal": 0.0}
    keys = Counter(e.key for e in examples)  # one split per (advice, polarity): its templates' rows together
    assert len(keys) <= 2 * len(ADVICE) and max(keys.values()) <= 3 * len(JUSTIFY_TEMPLATES)
