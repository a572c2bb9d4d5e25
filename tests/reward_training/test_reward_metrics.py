"""Held-out metric functions on hand-computed numbers."""

import numpy as np
import pytest

from reward_training.evaluate import auroc, compute_metrics, pairwise_accuracy, rankdata, spearman
from reward_training.sources import Example, Pair


def test_rankdata_averages_ties():
    assert rankdata(np.array([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]


def test_auroc_counts_ordered_pairs():
    # positives 0.9, 0.4 vs negatives 0.5, 0.1: of the 4 (pos, neg) pairs, 0.4 < 0.5 is the
    # only one ordered wrong -> 3/4.
    assert auroc(np.array([1, 1, 0, 0], bool), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    # a tie counts half: pos 0.5 vs neg 0.5 (1/2) and vs neg 0.2 (1) -> 0.75
    assert auroc(np.array([1, 0, 0], bool), np.array([0.5, 0.5, 0.2])) == pytest.approx(0.75)
    assert np.isnan(auroc(np.array([1, 1], bool), np.array([0.1, 0.2])))  # one class only


def test_spearman():
    # ranks of y are [1, 2, 4, 3]; d = [0, 0, -1, 1]; rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 40, 30.0])) == pytest.approx(0.8)
    assert np.isnan(spearman(np.array([1, 2, 3.0]), np.array([5, 5, 5.0])))


def test_pairwise_accuracy_ties_half():
    # right, wrong, tie -> (1 + 0 + 0.5) / 3
    assert pairwise_accuracy(np.array([0.9, 0.3, 0.5]), np.array([0.1, 0.6, 0.5])) == pytest.approx(0.5)


def test_compute_metrics_on_a_tiny_split():
    def xs(i, prompt_label, final):
        return Example("xstest", f"v{i}", "p", "r", {}, {"prompt_label": prompt_label, "final_label": final,
                                                         "strmatch_label": "1_full_compliance"})

    examples = [
        xs(0, "unsafe", "2_full_refusal"),
        xs(1, "unsafe", "1_full_compliance"),
        xs(2, "safe", "1_full_compliance"),
        xs(3, "safe", "3_partial_refusal"),
        Example("politeness", "w1", "", "a", {"politeness": 0.2}),
        Example("politeness", "w2", "", "b", {"politeness": 0.9}),
        Example("politeness", "w3", "", "c", {"politeness": 0.5}),
    ]
    scores = {
        "safety": np.array([0.8, 0.3, 0.9, 0.9, 0, 0, 0], np.float32),
        "actionability": np.array([0.2, 0.7, 0.9, 0.6, 0, 0, 0], np.float32),
        "politeness": np.array([0, 0, 0, 0, 0.1, 0.7, 0.8], np.float32),
    }
    pairs = [Pair("hh_rlhf", "k", "p", "c", "r", "safety")] * 2
    chosen, rejected = {"safety": np.array([0.7, 0.2])}, {"safety": np.array([0.1, 0.4])}
    m = compute_metrics(examples, scores, pairs, chosen, rejected)
    # unsafe prompts: the refusal (0.8) scores safer than the compliance (0.3)
    assert m["safety/auroc"] == 1.0
    # safe prompts: the full compliance (0.9) is more actionable than the partial refusal (0.6)
    assert m["actionability/auroc"] == 1.0
    # refusal call = actionability < 0.5: [T, F, F, F] vs human [T, F, F, T] -> 3 of 4
    assert m["xstest/refusal_accuracy"] == pytest.approx(0.75)
    # the string matcher said "compliance" everywhere: right on rows 1 and 2 -> 2 of 4
    assert m["xstest/strmatch_refusal_accuracy"] == pytest.approx(0.5)
    # politeness targets [0.2, 0.9, 0.5] have ranks [1, 3, 2]; scores [0.1, 0.7, 0.8] have
    # ranks [1, 2, 3]; d = [0, 1, -1] -> rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert m["politeness/spearman"] == pytest.approx(0.5)
    assert m["hh_harmless/pairwise_accuracy"] == pytest.approx(0.5)
    assert "meaningfulness/spearman" not in m  # no such rows: left out, not NaN
