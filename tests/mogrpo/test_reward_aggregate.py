"""Each aggregation mode on hand-computed numbers."""

import numpy as np
import pytest

from mogrpo.batch import BatchError, RewardScores
from mogrpo.config.reward import AggregationConfig
from mogrpo.reward_aggregate import (
    AggregationError,
    check_aggregation,
    combine,
    group_normalize,
    length_penalty,
    pair_safety,
    safety_gate,
    weighted_sum,
)

# Four responses, two groups (ids 7 and 3, not contiguous numbers on purpose).
SCORES = {
    "safety": np.array([0.9, 0.2, 0.6, 0.6], np.float32),
    "actionability": np.array([0.5, 1.0, 0.0, 1.0], np.float32),
}
WEIGHTS = {"safety": 1.0, "actionability": 0.5}
GROUPS = np.array([7, 7, 3, 3])


def test_weighted_sum():
    # safety + 0.5 * actionability = [0.9+0.25, 0.2+0.5, 0.6+0, 0.6+0.5]
    assert weighted_sum(SCORES, WEIGHTS) == pytest.approx([1.15, 0.7, 0.6, 1.1])


def test_labels_without_weight_do_not_contribute():
    assert weighted_sum(SCORES, {"safety": 2.0}) == pytest.approx([1.8, 0.4, 1.2, 1.2])


def test_group_normalize_with_equal_group():
    # group 7: [0.9, 0.2], mean 0.55, population std 0.35 -> [+1, -1];
    # group 3: [0.6, 0.6] are equal -> [0, 0] (no spread, no signal).
    z = group_normalize(SCORES["safety"], GROUPS, eps=0.0 + 1e-12)
    assert z == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-5)


def test_group_normalized_sum():
    # safety z:        [ 1, -1,  0, 0]
    # actionability z: [-1,  1, -1, 1]  (group 7: [0.5, 1.0] mean .75 std .25; group 3: [0, 1])
    # 1 * safety z + 0.5 * actionability z = [0.5, -0.5, -0.5, 0.5]
    cfg = AggregationConfig(mode="group_normalized", weights=WEIGHTS)
    out = combine(SCORES, cfg, group_ids=GROUPS)
    assert out == pytest.approx([0.5, -0.5, -0.5, 0.5], abs=1e-4)
    assert out.dtype == np.float32


def test_group_normalized_asserts_group_sizes():
    cfg = AggregationConfig(mode="group_normalized", weights=WEIGHTS)
    with pytest.raises(AggregationError, match="group sizes"):
        combine(SCORES, cfg, group_ids=[1, 1, 1, 2])  # sizes 3 and 1
    with pytest.raises(AggregationError, match="one size >= 2"):
        combine(SCORES, cfg, group_ids=[1, 2, 3, 4])  # singletons have no spread
    with pytest.raises(AggregationError, match="one group id per response"):
        combine(SCORES, cfg, group_ids=None)


def test_safety_gate():
    # The others' weighted sum is 0.5 * actionability = [0.25, 0.5, 0.0, 0.5];
    # safety [0.9, 0.2, 0.6, 0.6] >= 0.6 passes for responses 0, 2, 3 (0.6 >= 0.6 counts as safe),
    # response 1 gets the penalty instead; every response adds w_safety * safety = 1.0 * safety:
    # [0.9 + 0.25, 0.2 - 1.0, 0.6 + 0.0, 0.6 + 0.5]
    out = safety_gate(SCORES, WEIGHTS, "safety", threshold=0.6, penalty=-1.0)
    assert out == pytest.approx([1.15, -0.8, 0.6, 1.1])
    cfg = AggregationConfig(mode="safety_gate", weights=WEIGHTS, safety_threshold=0.6, gate_penalty=-1.0)
    assert combine(SCORES, cfg) == pytest.approx([1.15, -0.8, 0.6, 1.1])
    # Without a safety weight it is the plain gate: the others' sum or the penalty.
    assert safety_gate(SCORES, {"actionability": 0.5}, "safety", 0.6, -1.0) == pytest.approx([0.25, -1.0, 0.0, 0.5])


def test_safety_gate_helpfulness_cannot_buy_back_an_unsafe_answer():
    # A compliant answer to a harmful request: unsafe (0.45 < 0.5) but maximally helpful;
    # a refusal: barely safe (0.5) and useless. Weighted sum prefers the compliance
    # (0.45 + 1 + 1 + 0.5 = 2.95 vs 0.5 + 0.25 = 0.75); the gate prefers the refusal:
    # compliance 0.45 - 1.0 = -0.55, refusal 0.5 + 0.5 * 0.5 = 0.75.
    scores = {"safety": np.array([0.45, 0.5]), "actionability": np.array([1.0, 0.0]),
              "meaningfulness": np.array([1.0, 0.0]), "politeness": np.array([1.0, 0.5])}
    weights = {"safety": 1.0, "actionability": 1.0, "meaningfulness": 1.0, "politeness": 0.5}
    assert weighted_sum(scores, weights) == pytest.approx([2.95, 0.75])
    gate = AggregationConfig(mode="safety_gate", weights=weights, safety_threshold=0.5, gate_penalty=-1.0)
    assert combine(scores, gate) == pytest.approx([-0.55, 0.75])


def test_pair_rule_gates_compliance_with_a_harmful_request():
    # Three answers, all rated safe by the safety label (0.9):
    #   0: complies (refusal .1) with a harmful request (.95): rule 1 - .95 * .9 = 0.145 -> min 0.145, unsafe
    #   1: refuses (.9) a harmful request (.95):               rule 1 - .95 * .1 = 0.905 -> min 0.9, safe
    #   2: answers (refusal .1) a benign request (.1):         rule 1 - .1 * .9 = 0.91   -> min 0.9, safe
    scores = {"safety": np.array([0.9, 0.9, 0.9]), "actionability": np.array([1.0, 0.0, 1.0]),
              "harmful_request": np.array([0.95, 0.95, 0.1]), "refusal": np.array([0.1, 0.9, 0.1])}
    assert pair_safety(scores["safety"], scores["harmful_request"], scores["refusal"]) == pytest.approx([0.145, 0.9, 0.9])
    gate = AggregationConfig(mode="safety_gate", weights={"safety": 1.0, "actionability": 1.0})
    # 0: 0.145 - 1 = -0.855; 1: 0.9 + 0 = 0.9; 2: 0.9 + 1 = 1.9
    assert combine(scores, gate) == pytest.approx([-0.855, 0.9, 1.9])
    # a model without the two labels gates on its safety label alone: all three pass
    plain = {k: v for k, v in scores.items() if k in ("safety", "actionability")}
    assert combine(plain, gate) == pytest.approx([1.9, 0.9, 1.9])


def test_gate_penalty_must_not_reward_unsafe_answers():
    with pytest.raises(ValueError, match="gate_penalty"):
        AggregationConfig(mode="safety_gate", gate_penalty=0.5)


def test_length_penalty_rule_term():
    # 0.2 * max(0, len - 256) / 256: [0, 0.2 * 44/256, 0.2 * 256/256, 0]
    pen = length_penalty(np.array([100, 300, 512, 256]), coef=0.2, target=256)
    assert pen == pytest.approx([0.0, 0.034375, 0.2, 0.0])
    cfg = AggregationConfig(mode="weighted_sum", weights=WEIGHTS, length_penalty=0.2, length_target=256)
    out = combine(SCORES, cfg, response_lengths=[100, 300, 512, 256])
    assert out == pytest.approx([1.15, 0.7 - 0.034375, 0.6 - 0.2, 1.1], abs=1e-6)
    with pytest.raises(AggregationError, match="response length"):
        combine(SCORES, cfg, response_lengths=[1, 2])


def test_unknown_weight_key_names_key_and_labels():
    cfg = AggregationConfig(weights={"safety": 1.0, "helpfulness": 1.0})
    with pytest.raises(AggregationError, match=r"'helpfulness'.*\['safety', 'actionability'\]"):
        check_aggregation(cfg, ["safety", "actionability"])
    gate = AggregationConfig(mode="safety_gate", weights={}, safety_label="harmless")
    with pytest.raises(AggregationError, match="safety_label 'harmless'"):
        check_aggregation(gate, ["safety"])


def test_non_finite_score_names_the_sample():
    bad = {"safety": np.array([0.1, np.nan, 0.3], np.float32)}
    combined = combine(bad, AggregationConfig(mode="weighted_sum", weights={"safety": 1.0}))
    with pytest.raises(BatchError, match="sample 1"):
        RewardScores(bad, combined)
