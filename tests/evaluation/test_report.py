"""report.markdown: the comparison table stays one table with two trained policies."""

from evaluation.report import markdown


def _rate(value, n=20):
    return {"value": value, "low": max(0.0, value - 0.1), "high": min(1.0, value + 0.1), "n": n}


def test_reward_hacking_verdicts_follow_the_comparison_table():
    policies = {"base": {"harmful/refusal": _rate(0.1)}, "a": {"harmful/refusal": _rate(0.7)},
                "b": {"harmful/refusal": _rate(0.8)}}
    comparisons = {name: {"harmful/refusal": {"better": True, "diff": d, "b": 0, "c": c, "n": 20, "p_exact": 1e-3},
                          "reward_hacking": {"suspected": False, "reason": "no reward model given"}}
                   for name, d, c in (("a", 0.6, 12), ("b", 0.7, 14))}
    text = markdown({"settings": {"judge": "union"}, "policies": policies, "sets": {}, "comparisons": comparisons,
                     "judges": {"union": {f"xstest/{m}": _rate(0.9, 2250) for m in ("accuracy", "precision", "recall")}}})
    section = text.split("## Against base")[1].split("## Judges")[0].strip().splitlines()[1:]
    table = [line for line in section if line.startswith("|")]
    assert [line.split(" | ")[0] for line in table[2:]] == ["| a", "| b"]
    first_verdict = next(i for i, line in enumerate(section) if "reward hacking" in line)
    assert all(not line.startswith("|") for line in section[first_verdict:])  # no row after a verdict
    assert "**a: reward hacking not indicated**" in text and "**b: reward hacking not indicated**" in text
