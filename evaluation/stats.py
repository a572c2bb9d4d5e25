"""Rates with intervals and paired tests, as pure functions (no model, no files).

- `wilson`: the Wilson score interval of a proportion k/n (good down to small n and
  rates near 0 or 1, where the normal interval is not).
- `bootstrap_mean` / `bootstrap_stat`: percentile bootstrap of any statistic of a sample;
  `paired_bootstrap_diff` resamples the same prompts for two policies together.
- `mcnemar`: the paired test of two binary outcomes on the same prompts (base vs trained):
  only the discordant prompts count, b (first yes, second no) and c (first no, second yes);
  the exact two-sided binomial p and the continuity-corrected chi-square p.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval; `n` observations, `k` successes for a rate."""

    value: float
    low: float
    high: float
    n: int
    interval: str
    k: int | None = None

    def as_dict(self) -> dict:
        return {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in asdict(self).items()
                if v is not None or key != "k"}


def wilson(k: int, n: int, z: float = Z95) -> Estimate:
    """k successes in n trials: the rate k/n and its Wilson score interval
    (center (p + z²/2n) / (1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n))."""
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "wilson", 0)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, center - half), min(1.0, center + half), n, "wilson", k)


def rate(flags: Sequence[bool]) -> Estimate:
    """The share of true flags, with its Wilson interval."""
    return wilson(int(sum(bool(f) for f in flags)), len(flags))


def bootstrap_stat(n: int, stat: Callable[[np.ndarray], float], samples: int = 1000, seed: int = 0,
                   recentre: bool = False) -> Estimate:
    """`stat(all n indices)` and its 95% percentile-bootstrap interval: `stat` is called on
    `samples` index arrays drawn with replacement (a fixed seed: a rerun gives the same
    interval). Taking indices lets a statistic of a whole corpus (distinct-2) be resampled.
    `recentre`: for a statistic that resampling itself shifts (an answer drawn twice lowers
    distinct-n), the interval is the draws' spread around their mean, moved onto the value."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "bootstrap")
    value = float(stat(np.arange(n)))
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(samples)], dtype=float)
    if recentre:
        draws = draws - np.nanmean(draws) + value
    return _percentiles(value, draws, n)


def _percentiles(value: float, draws: np.ndarray, n: int) -> Estimate:
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return Estimate(value, math.nan, math.nan, n, "bootstrap")
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(low), float(high), n, "bootstrap")


def bootstrap_mean(values: Sequence[float], samples: int = 2000, seed: int = 0) -> Estimate:
    """The mean and its percentile-bootstrap interval (vectorised: one draw is a row of
    n indices drawn with replacement)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "bootstrap")
    rng = np.random.default_rng(seed)
    draws = np.concatenate([x[rng.integers(0, n, (min(samples - i, 500), n))].mean(axis=1)
                            for i in range(0, samples, 500)])
    return _percentiles(float(x.mean()), draws, n)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0) -> Estimate:
    """mean(b) - mean(a) over the same items, with an interval from resampling the items
    (each draw keeps an item's two values together)."""
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap_diff: {len(a)} vs {len(b)} values; the items must be the same")
    return bootstrap_mean([float(y) - float(x) for x, y in zip(a, b)], samples, seed)


@dataclass(frozen=True)
class McNemar:
    """McNemar's test of paired binary outcomes: b = first yes / second no, c = first no /
    second yes; `diff` = (c - b) / n is the change of the rate from first to second."""

    n: int
    b: int
    c: int
    diff: float
    p_exact: float
    p_chi2_cc: float

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def binom_two_sided_half(k: int, n: int) -> float:
    """Two-sided p of k (or fewer, or as extreme above) successes in n fair coin flips:
    min(1, 2 · sum_{i<=min(k, n-k)} C(n, i) / 2^n)."""
    m = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(first: Sequence[bool], second: Sequence[bool]) -> McNemar:
    """McNemar's test on two outcome lists over the same prompts (same order)."""
    if len(first) != len(second):
        raise ValueError(f"mcnemar: {len(first)} vs {len(second)} outcomes; the prompts must be the same")
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    return mcnemar_counts(b, c, len(first))


def mcnemar_counts(b: int, c: int, n: int) -> McNemar:
    """McNemar's test from the discordant counts b, c of n pairs: the exact p is the
    two-sided binomial p of b in b + c flips; the chi-square statistic with continuity
    correction is (|b - c| - 1)² / (b + c), whose 1-df p is erfc(sqrt(x / 2))."""
    d = b + c
    if d == 0:
        return McNemar(n, 0, 0, 0.0, 1.0, 1.0)
    x = max(0, abs(b - c) - 1) ** 2 / d
    return McNemar(n, b, c, (c - b) / n if n else math.nan, binom_two_sided_half(b, d), math.erfc(math.sqrt(x / 2)))


def confusion(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, Estimate | int]:
    """Accuracy, precision and recall of `predicted` against `truth`, each with a Wilson
    interval (precision over predicted positives, recall over true positives)."""
    if len(truth) != len(predicted):
        raise ValueError(f"confusion: {len(truth)} labels vs {len(predicted)} predictions")
    tp = sum(1 for t, p in zip(truth, predicted) if t and p)
    fp = sum(1 for t, p in zip(truth, predicted) if p and not t)
    fn = sum(1 for t, p in zip(truth, predicted) if t and not p)
    tn = len(truth) - tp - fp - fn
    return {"accuracy": wilson(tp + tn, len(truth)), "precision": wilson(tp, tp + fp), "recall": wilson(tp, tp + fn),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}
