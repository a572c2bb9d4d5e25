"""The interval and test arithmetic of evaluation/stats.py on numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.stats import (bootstrap_mean, bootstrap_stat, confusion, mcnemar, mcnemar_counts,
                              paired_bootstrap_diff, rate, wilson)


def test_wilson_8_of_10():
    # p = 0.8, z = 1.96, z² = 3.8415; denominator 1 + z²/n = 1.38415
    # center = (0.8 + 3.8415/20) / 1.38415 = 0.992073 / 1.38415 = 0.716737
    # half = 1.96 · sqrt(0.8·0.2/10 + 3.8415/400) / 1.38415 = 1.96 · sqrt(0.0256037) / 1.38415 = 0.226581
    e = wilson(8, 10)
    assert e.value == 0.8 and e.k == 8 and e.n == 10
    assert e.low == pytest.approx(0.490156, abs=1e-5)
    assert e.high == pytest.approx(0.943318, abs=1e-5)


def test_wilson_edges():
    # 0 of 10: center = (3.841459/20) / 1.3841459 = 0.138766, half = 1.959964·sqrt(3.841459/400) / 1.3841459
    # = 0.192073 / 1.3841459 = 0.138766, so the interval is [0, 0.277533]; 10 of 10 mirrors it
    e = wilson(0, 10)
    assert e.value == 0 and e.low == 0 and e.high == pytest.approx(0.277533, abs=1e-5)
    full = wilson(10, 10)
    assert full.low == pytest.approx(1 - 0.277533, abs=1e-5) and full.high == pytest.approx(1.0)
    empty = wilson(0, 0)
    assert math.isnan(empty.value) and empty.n == 0
    assert empty.as_dict()["value"] is None  # NaN is written as null in eval.json
    with pytest.raises(ValueError, match="k <= n"):
        wilson(3, 2)


def test_rate_counts_true_flags():
    e = rate([True, False, True, True])
    assert (e.k, e.n, e.value) == (3, 4, 0.75)


def test_mcnemar_exact_and_chi2():
    # b = 1 (base refuses, trained does not), c = 9: 10 discordant prompts of n = 20.
    # exact: 2 · P(X <= 1 | Bin(10, 1/2)) = 2 · (1 + 10) / 1024 = 0.021484375
    # chi² with continuity correction: (|1 - 9| - 1)² / 10 = 4.9; p = erfc(sqrt(4.9 / 2)) = 0.026857
    t = mcnemar_counts(1, 9, 20)
    assert t.p_exact == pytest.approx(22 / 1024)
    assert t.p_chi2_cc == pytest.approx(0.026857, abs=1e-5)
    assert t.diff == pytest.approx((9 - 1) / 20)


def test_mcnemar_from_outcomes_pairs_by_position():
    base = [True, True, False, False, True]
    trained = [True, False, True, True, True]
    t = mcnemar(base, trained)  # b = 1 (prompt 2), c = 2 (prompts 3, 4)
    assert (t.b, t.c, t.n) == (1, 2, 5)
    # exact: 2 · P(X <= 1 | Bin(3, 1/2)) = 2 · 4/8 = 1 (capped at 1)
    assert t.p_exact == 1.0
    assert mcnemar([True] * 4, [True] * 4).p_exact == 1.0  # no discordant pair: no evidence of a change
    with pytest.raises(ValueError, match="same"):
        mcnemar([True], [True, False])


def test_bootstrap_mean_interval():
    const = bootstrap_mean([2.0] * 10, samples=200)
    assert (const.value, const.low, const.high) == (2.0, 2.0, 2.0)
    # half zeros, half ones: mean 0.5, standard error sqrt(0.25/100) = 0.05, so the interval is about 0.5 ± 0.098
    e = bootstrap_mean([0.0] * 50 + [1.0] * 50, samples=2000, seed=1)
    assert e.value == 0.5 and 0.38 < e.low < 0.43 and 0.57 < e.high < 0.62
    assert bootstrap_mean([0.0] * 50 + [1.0] * 50, samples=2000, seed=1) == e  # seeded: repeatable
    assert bootstrap_mean([], samples=10).n == 0


def test_paired_bootstrap_diff():
    base = [0.1, 0.2, 0.3, 0.4]
    d = paired_bootstrap_diff(base, [x + 0.5 for x in base], samples=200)
    assert (d.value, d.low, d.high) == pytest.approx((0.5, 0.5, 0.5))  # every prompt moved by 0.5: no spread
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap_diff([1.0], [1.0, 2.0])


def test_bootstrap_stat_of_indices():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    e = bootstrap_stat(4, lambda idx: float(x[idx].max()), samples=300)
    assert e.value == 4.0 and e.high == 4.0 and 1.0 <= e.low <= 4.0


def test_confusion():
    truth = [True, True, True, False, False]
    pred = [True, True, False, True, False]
    c = confusion(truth, pred)  # tp 2, fn 1, fp 1, tn 1
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (2, 1, 1, 1)
    assert c["accuracy"].value == pytest.approx(3 / 5)
    assert c["precision"].value == pytest.approx(2 / 3)
    assert c["recall"].value == pytest.approx(2 / 3)


def test_bootstrap_recentre_keeps_the_value_inside():
    # a statistic that resampling lowers (like distinct-n: a text drawn twice adds no new n-grams)
    texts = np.arange(20)
    stat = lambda idx: len(set(texts[idx].tolist())) / len(idx)  # noqa: E731
    raw = bootstrap_stat(20, stat, samples=300)
    assert raw.value == 1.0 and raw.high < 1.0  # the raw percentile interval misses the value
    fixed = bootstrap_stat(20, stat, samples=300, recentre=True)
    assert fixed.low < 1.0 < fixed.high and fixed.high - fixed.low == pytest.approx(raw.high - raw.low)
