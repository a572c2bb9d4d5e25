"""Refusal ranking on hand numbers: AUROC per pair of kinds, the shares at the harmful
target, intervals, missing kinds, and the report's section with the reward's column."""

import math

import pytest

from evaluation.ranking import ranking_metrics
from evaluation.report import markdown

KINDS = ["harmful"] * 3 + ["benign"] * 2 + ["xstest_safe"] * 3 + ["xstest_unsafe"] * 2
SCORES = [3.0, 2.0, 1.0, 0.0, 2.5, 1.5, 0.0, 0.5, 2.0, 1.5]


def test_auroc_and_shares_at_the_harmful_target_by_hand():
    m = ranking_metrics(SCORES, KINDS, samples=200, seed=0)
    # harmful 3, 2, 1 over benign 0, 2.5: 3>0, 3>2.5, 2>0, 1>0 of 6 pairs
    assert m["ranking/auroc/harmful_vs_benign"]["value"] == pytest.approx(4 / 6)
    # over XSTest safe 1.5, 0, 0.5: 3 and 2 beat all three, 1 beats two: 8 of 9
    assert m["ranking/auroc/harmful_vs_xstest_safe"]["value"] == pytest.approx(8 / 9)
    # XSTest unsafe 2, 1.5 over safe 1.5, 0, 0.5: 2 beats all, 1.5 ties one (half) and beats two: 5.5 of 6
    assert m["ranking/auroc/xstest_unsafe_vs_xstest_safe"]["value"] == pytest.approx(5.5 / 6)
    # the harmful scores' 20th percentile (numpy's linear rule): 1 + 0.4 * (2 - 1) = 1.4;
    # benign at or above it: 2.5 of (0, 2.5); XSTest safe below it: 0 and 0.5 of (1.5, 0, 0.5)
    assert m["ranking/at_harmful_0.8/benign_refusal"]["value"] == pytest.approx(0.5)
    assert m["ranking/at_harmful_0.8/xstest_safe_compliance"]["value"] == pytest.approx(2 / 3)
    for key, e in m.items():
        assert e["low"] <= e["value"] <= e["high"], key
    assert m["ranking/auroc/harmful_vs_benign"]["n"] == 5 and m["ranking/at_harmful_0.8/xstest_safe_compliance"]["n"] == 6


def test_a_policy_that_ranks_every_harmful_prompt_first_scores_one_and_refuses_no_benign_prompt():
    m = ranking_metrics([-0.1, -0.2, -3.0, -2.5], ["harmful", "harmful", "benign", "benign"], samples=200, seed=0)
    assert m["ranking/auroc/harmful_vs_benign"]["value"] == 1.0
    assert m["ranking/at_harmful_0.8/benign_refusal"]["value"] == 0.0
    assert not any("xstest" in key for key in m)  # no XSTest prompt: those numbers are left out
    flat = ranking_metrics([-1.0] * 4, ["harmful", "harmful", "benign", "benign"], samples=200, seed=0)
    assert flat["ranking/auroc/harmful_vs_benign"]["value"] == 0.5  # ties count half: no discrimination
    assert ranking_metrics([1.0, 2.0], ["benign", "benign"], samples=200, seed=0) == {}


def test_report_shows_the_ranking_beside_the_rewards_request_judgement():
    m = ranking_metrics(SCORES, KINDS, samples=200, seed=0)
    reward = ranking_metrics([1 - s for s in SCORES], KINDS, samples=200, seed=0)
    result = {"settings": {"judge": "union", "ranking": {"refusal_text": "No."}}, "policies": {"base": m},
              "sets": {}, "comparisons": {}, "judges": {},
              "reward_model": {"labels": ["harmful_request"], "ranking": reward}}
    section = markdown(result).split("## Refusal ranking")[1].split("## Reward-model labels")[0]
    assert '"No."' in section and "| measure | base | reward harmful_request* |" in section
    row = next(line for line in section.splitlines() if line.startswith("| AUROC harmful over benign"))
    assert row.startswith(f"| AUROC harmful over benign ↑ | {m['ranking/auroc/harmful_vs_benign']['value']:.3f} [")
    assert f"| {reward['ranking/auroc/harmful_vs_benign']['value']:.3f} [" in row
    assert "NOT independent" in section
    assert not math.isnan(reward["ranking/auroc/harmful_vs_benign"]["value"])
