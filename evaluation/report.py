"""The outputs of an evaluation: eval.json, report.md (markdown tables), chart.png
(policies side by side) and answers.parquet (every answer with its judge labels), each
written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from evaluation.sets import KINDS
from mogrpo.atomic import atomic_write_text

HEADLINE = [("harmful/refusal", "harmful: refusal ↑"), ("benign/refusal", "benign: refusal ↓ (over-refusal)"),
            ("contested/refusal", "contested (I-Controversial): refusal"),
            ("xstest_safe/compliance", "XSTest safe: compliance ↑"), ("xstest_unsafe/refusal", "XSTest unsafe: refusal ↑"),
            ("capability/ref_loglik", "AlpacaEval reference log-lik/token ↑"),
            ("capability/distinct2", "distinct-2 of benign answers ↑"), ("capability/repetition", "repetition (seq-rep-4) ↓"),
            ("capability/mean_length", "mean answer length (tokens)"), ("capability/truncated", "cut off at the token limit ↓")]
RANKING = [("ranking/auroc/harmful_vs_benign", "AUROC harmful over benign ↑"),
           ("ranking/auroc/harmful_vs_xstest_safe", "AUROC harmful over XSTest safe ↑"),
           ("ranking/auroc/xstest_unsafe_vs_xstest_safe", "AUROC XSTest unsafe over safe ↑"),
           ("ranking/at_harmful_0.8/benign_refusal", "benign refusal at harmful 0.80 ↓"),
           ("ranking/at_harmful_0.8/xstest_safe_compliance", "XSTest safe compliance at harmful 0.80 ↑")]
NOT_INDEPENDENT = ("Reward-model labels are NOT independent: the policy was trained to raise them. A reward that "
                   "rises while the judge-based and capability measures above do not is reward hacking.")


def fmt(e: dict | None, digits: int = 3) -> str:
    if not e or e.get("value") is None:
        return "–"
    if e.get("low") is None:
        return f"{e['value']:.{digits}f} (n={e.get('n', 0)})"
    return f"{e['value']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}] (n={e['n']})"


def markdown(result: dict) -> str:
    names = list(result["policies"])
    head = "| measure | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    lines = [f"# Safety evaluation\n\nJudge of the headline rates: `{result['settings']['judge']}` (string match; "
             "its agreement with XSTest's human labels is below). 95% intervals: Wilson for rates, percentile "
             "bootstrap otherwise.\n", head.rstrip("\n")]
    for key, label in HEADLINE:
        if any(key in p for p in result["policies"].values()):
            lines.append(f"| {label} | " + " | ".join(fmt(result["policies"][n].get(key)) for n in names) + " |")
    prompted = {n: p["system_prompt"] for n, p in result["policies"].items() if p.get("system_prompt")}
    if prompted:
        lines.append("\nSystem prompts (the others get their chat template's default):\n")
        lines += [f"- {n}: {json.dumps(text, ensure_ascii=False)}" for n, text in prompted.items()]
    lines.append("\n## Per set\n")
    lines.append(head.rstrip("\n"))
    for s, info in result["sets"].items():
        key = f"set/{s}/{KINDS[info['kind']][0]}"
        lines.append(f"| {s} ({info['kind']}, {KINDS[info['kind']][0]}) | "
                     + " | ".join(fmt(result["policies"][n].get(key)) for n in names) + " |")
    if result.get("comparisons"):
        lines.append("\n## Against base (same prompts; McNemar exact p for rates, paired bootstrap otherwise)\n")
        lines.append("| policy | measure | change | test |\n|---|---|---|---|")
        for name, comp in result["comparisons"].items():
            for key, e in comp.items():
                if not isinstance(e, dict) or "better" not in e:
                    continue
                if "p_exact" in e:
                    lines.append(f"| {name} | {key} | {e['diff']:+.3f} (b={e['b']}, c={e['c']}, n={e['n']}) | "
                                 f"p={e['p_exact']:.3g} |")
                elif e.get("value") is not None:
                    lines.append(f"| {name} | {key} | {e['value']:+.3f} | 95% [{e['low']:+.3f}, {e['high']:+.3f}] |")
        for name, comp in result["comparisons"].items():  # after the table: a line inside would end it
            v = comp["reward_hacking"]
            lines.append(f"\n**{name}: reward hacking {'SUSPECTED' if v['suspected'] else 'not indicated'}** – {v['reason']}.")
    if any(key in p for p in result["policies"].values() for key, _ in RANKING):
        lines += ranking_table(result)
    if result.get("reward_model"):
        labels = result["reward_model"]["labels"]
        lines.append(f"\n## Reward-model labels (NOT independent)\n\n{NOT_INDEPENDENT}\n")
        lines.append(head.rstrip("\n"))
        for key in [f"reward/{label}" for label in labels] + ["reward/mean"] + [f"reward/{k}/mean" for k in KINDS]:
            if any(key in p for p in result["policies"].values()):
                lines.append(f"| {key} | " + " | ".join(fmt(result["policies"][n].get(key)) for n in names) + " |")
    lines.append("\n## Judges against XSTest's 2,250 human-labelled completions\n")
    lines.append("| judge | accuracy | precision | recall |\n|---|---|---|---|")
    for j, v in result["judges"].items():
        lines.append(f"| {j} | " + " | ".join(fmt(v[f"xstest/{m}"]) for m in ("accuracy", "precision", "recall")) + " |")
    lines.append("\nString-match judges were validated on five chat models' styles; a trained policy may refuse "
                 "without the usual phrases. Label a blinded sample (`--export-blind N`) and score it with "
                 "`python -m evaluation score-sheet blind_sample.csv --key blind_key.csv`.\n")
    lines.append("## Sets and contamination\n")
    lines.append("| set | kind | rows | in training (exact / near) | duplicate of an earlier set | too long | "
                 "held out | evaluated |\n|---|---|---|---|---|---|---|---|")
    for s, i in result["sets"].items():
        lines.append(f"| {s} | {i['kind']} | {i['rows']} | {i['training_exact']} / {i['training_near']} | "
                     f"{i['duplicate']} | {i['too_long']} | {i['held_out']} | {i['evaluated']} |")
    return "\n".join(lines) + "\n"


def ranking_table(result: dict) -> list[str]:
    """The refusal-ranking section: per policy, and for the reward's `harmful_request` head."""
    reward = (result.get("reward_model") or {}).get("ranking")
    columns = [(n, p) for n, p in result["policies"].items()] + ([("reward harmful_request*", reward)] if reward else [])
    text = result["settings"].get("ranking", {}).get("refusal_text", "")
    lines = [f"\n## Refusal ranking\n\nEach prompt is ranked by the policy's log-prob of the refusal "
             f"{json.dumps(text, ensure_ascii=False)} after it. AUROC: how often a prompt of the first kind is ranked "
             "above one of the second (0.5 = no discrimination). \"At harmful 0.80\": the policy refusing exactly the "
             "prompts it ranks at or above its harmful prompts' 20th percentile. The greedy rates above say where a "
             "policy's threshold is; these say what its ranking allows at the target.\n",
             "| measure | " + " | ".join(n for n, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for key, label in RANKING:
        lines.append(f"| {label} | " + " | ".join(fmt(p.get(key)) for _, p in columns) + " |")
    if reward:
        lines.append("\n\\* The reward model's `harmful_request` head on the same prompts: what the reward can tell "
                     "apart (NOT independent).")
    return lines


def chart(result: dict, file: Path) -> None:
    """Grouped bars: the headline rates per policy with 95% intervals, and the reference log-likelihood."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(result["policies"])
    rates = [(k, label) for k, label in HEADLINE
             if k not in ("capability/ref_loglik", "capability/mean_length")
             and any((result["policies"][n].get(k) or {}).get("value") is not None for n in names)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [5, 1]})
    width = 0.8 / len(names)
    x = np.arange(len(rates))
    for i, n in enumerate(names):
        es = [result["policies"][n].get(k) or {} for k, _ in rates]
        vals = np.array([e.get("value") if e.get("value") is not None else np.nan for e in es], dtype=float)
        lo = np.array([e.get("low") if e.get("low") is not None else np.nan for e in es], dtype=float)
        hi = np.array([e.get("high") if e.get("high") is not None else np.nan for e in es], dtype=float)
        err = np.clip(np.nan_to_num(np.vstack([vals - lo, hi - vals])), 0, None)
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(vals), width, yerr=err, capsize=3, label=n)
        ax.bar_label(bars, labels=["–" if np.isnan(v) else f"{v:.2f}" for v in vals], fontsize=7, padding=2)
    ax.set_xticks(x, [label for _, label in rates], rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"rate (judge: {result['settings']['judge']}), 95% interval")
    ax.legend()
    ax.set_title("Safety and capability, policies side by side")
    for i, n in enumerate(names):
        e = result["policies"][n].get("capability/ref_loglik") or {}
        if e.get("value") is not None:
            low = e["low"] if e.get("low") is not None else e["value"]
            high = e["high"] if e.get("high") is not None else e["value"]
            ax2.bar(i, e["value"], 0.6, yerr=[[max(0, e["value"] - low)], [max(0, high - e["value"])]], capsize=3,
                    color=f"C{i}")
    ax2.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax2.set_title("AlpacaEval ref.\nlog-lik / token ↑", fontsize=9)
    fig.tight_layout()
    tmp = file.with_name(f".{file.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, file)


def write_parquet(rows: list[dict], file: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    os.close(fd)
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, file)


def write_outputs(result: dict, rows: list[dict], out: Path) -> dict[str, Path]:
    files = {"json": out / "eval.json", "markdown": out / "report.md", "chart": out / "chart.png",
             "answers": out / "answers.parquet"}
    write_parquet(rows, files["answers"])
    atomic_write_text(files["json"], json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(files["markdown"], markdown(result))
    chart(result, files["chart"])
    return files
