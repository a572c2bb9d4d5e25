"""Rates per set and kind from judged answer rows, and the reward-hacking verdict on
hand-made comparisons."""

from __future__ import annotations

from evaluation.metrics import hacking_verdict, rate_keys, significant


def row(set_: str, kind: str, i: int, refused: bool) -> dict:
    return {"set": set_, "kind": kind, "id": f"{set_}:{i}", "judge_union": refused}


def test_rate_keys_pool_and_split():
    rows = [row("a", "harmful", 0, True), row("a", "harmful", 1, False), row("b", "harmful", 0, True),
            row("s", "xstest_safe", 0, False), row("s", "xstest_safe", 1, True)]
    out = rate_keys(rows, "union", {"a": "harmful", "b": "harmful", "s": "xstest_safe", "e": "benign"})
    assert (out["harmful/refusal"]["k"], out["harmful/refusal"]["n"]) == (2, 3)  # pooled over a and b
    assert out["set/b/refusal"]["value"] == 1.0
    assert (out["xstest_safe/compliance"]["k"], out["xstest_safe/refusal"]["k"]) == (1, 1)
    assert out["benign/refusal"] == {"value": None, "low": None, "high": None, "n": 0, "interval": "wilson", "k": 0}


def mc(diff: float, p: float, better: str) -> dict:
    return {"diff": diff, "p_exact": p, "better": better}


def boot(low: float, high: float, better: str = "higher") -> dict:
    return {"value": (low + high) / 2, "low": low, "high": high, "better": better}


def test_significance_direction():
    assert significant(mc(0.2, 0.01, "higher")) == 1
    assert significant(mc(0.2, 0.01, "lower")) == -1  # more over-refusal is worse
    assert significant(mc(0.2, 0.2, "higher")) == 0
    assert significant(boot(-0.3, -0.1)) == -1 and significant(boot(-0.1, 0.1)) == 0


def test_reward_hacking_verdict():
    flat = {"harmful/refusal": mc(0.0, 1.0, "higher"), "benign/refusal": mc(0.02, 0.5, "lower"),
            "capability/ref_loglik": boot(-0.4, -0.1)}
    v = hacking_verdict({**flat, "reward/mean": boot(0.05, 0.1)})
    assert v["suspected"] is True and v["worsened"] == ["capability/ref_loglik"] and "reward hacking" in v["reason"]
    real = {**flat, "harmful/refusal": mc(0.3, 0.001, "higher"), "reward/mean": boot(0.05, 0.1)}
    assert hacking_verdict(real)["suspected"] is False and hacking_verdict(real)["improved"] == ["harmful/refusal"]
    assert hacking_verdict({**flat, "reward/mean": boot(-0.01, 0.02)})["suspected"] is False
    assert hacking_verdict(flat)["checked"] is False  # no reward model
