"""Refusal judges (mogrpo/refusal.py: string matches, independent of the reward model),
their validation against XSTest's 2,250 human-labelled completions, and a blinded sample
for people to label when a policy's style may fool them (`--export-blind N`), with the
scorer of a labelled sheet (`python -m evaluation score-sheet`).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from pathlib import Path

from evaluation.sets import EvalConfig, EvalSetError
from evaluation.stats import confusion
from mogrpo.atomic import atomic_write_text
from mogrpo.refusal import JUDGES

SHEET_FIELDS = ("item", "prompt", "answer", "refusal")
KEY_FIELDS = ("item", "policy", "set", "id", *(f"judge_{j}" for j in JUDGES))
TRUE_LABELS = {"1", "y", "yes", "true", "r", "refusal", "refuse", "refused"}
FALSE_LABELS = {"0", "n", "no", "false", "c", "compliance", "comply", "complied"}


def judge_all(texts: Sequence[str]) -> dict[str, list[bool]]:
    """Every judge's refusal call on every text."""
    return {name: [bool(call(t or "")) for t in texts] for name, call in JUDGES.items()}


def load_human_labels(cfg: EvalConfig) -> tuple[list[str], list[bool]]:
    """XSTest's completions and whether people labelled each a (full or partial) refusal."""
    folder = cfg.data_path(cfg.judge_validation.path)
    v = cfg.judge_validation
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise EvalSetError(f"judge_validation.path: no csv files of labelled completions in {folder}")
    texts, truth = [], []
    for file in files:
        with open(file, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise EvalSetError(f"judge validation file {file} holds no rows")
        for field in (v.text_field, v.label_field):
            if field not in rows[0]:
                raise EvalSetError(f"judge validation file {file} has no field {field!r} (fields: {sorted(rows[0])})")
        texts += [r[v.text_field] or "" for r in rows]
        truth += [r[v.label_field] in v.refusal_values for r in rows]
    return texts, truth


def validate_judges(texts: Sequence[str], truth: Sequence[bool]) -> dict[str, dict]:
    """judge -> {"xstest/accuracy", "xstest/precision", "xstest/recall": Estimate dicts, counts}."""
    out = {}
    for name, calls in judge_all(texts).items():
        c = confusion(truth, calls)
        out[name] = {**{f"xstest/{m}": c[m].as_dict() for m in ("accuracy", "precision", "recall")},
                     **{m: c[m] for m in ("tp", "fp", "fn", "tn")}, "n": len(truth)}
    return out


def format_validation(validation: dict[str, dict], title: str = "refusal judges vs XSTest's human labels") -> str:
    lines = [f"{title} (n={next(iter(validation.values()))['n']}; 95% Wilson intervals):"]
    for name, v in validation.items():
        parts = [f"{m} {v[f'xstest/{m}']['value']:.3f} [{v[f'xstest/{m}']['low']:.3f}, {v[f'xstest/{m}']['high']:.3f}]"
                 for m in ("accuracy", "precision", "recall")]
        lines.append(f"  {name:<10} " + "  ".join(parts))
    return "\n".join(lines)


# ---------------------------------------------------------------- blinded sample


def _csv_text(fields: Sequence[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def export_blind(answers: list[dict], n: int, seed: int, out: Path) -> tuple[Path, Path]:
    """A shuffled sample of `n` answers with the policy hidden, for people to label:
    `blind_sample.csv` (item, prompt, answer, an empty `refusal` column: 1 = full or partial
    refusal, 0 = compliance) and `blind_key.csv` (item -> policy, set, prompt id, judge calls)."""
    rng = random.Random(f"{seed}:blind")
    picked = rng.sample(answers, min(n, len(answers)))
    rng.shuffle(picked)
    sheet, key = [], []
    for i, a in enumerate(picked):
        item = f"item{i + 1:04d}"
        sheet.append({"item": item, "prompt": a["prompt"], "answer": a["answer"], "refusal": ""})
        key.append({"item": item, "policy": a["policy"], "set": a["set"], "id": a["id"],
                    **{f"judge_{j}": int(a[f"judge_{j}"]) for j in JUDGES}})
    sheet_file, key_file = out / "blind_sample.csv", out / "blind_key.csv"
    atomic_write_text(sheet_file, _csv_text(SHEET_FIELDS, sheet))
    atomic_write_text(key_file, _csv_text(KEY_FIELDS, key))
    return sheet_file, key_file


def _parse_label(value: str, file: Path, item: str) -> bool | None:
    v = (value or "").strip().lower()
    if not v:
        return None
    if v in TRUE_LABELS:
        return True
    if v in FALSE_LABELS:
        return False
    raise EvalSetError(f"{file}, item {item}: refusal label {value!r} is not 1/0 (yes/no, refusal/compliance)")


def score_sheet(sheet: Path, key: Path | None = None) -> dict:
    """Each judge's accuracy, precision and recall against the people's labels of a
    labelled blind sheet (unlabelled rows are skipped), overall and, with the key, per policy."""
    sheet = Path(sheet)
    if not sheet.is_file():
        raise EvalSetError(f"labelled sheet not found: {sheet}")
    with open(sheet, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("item", "answer", "refusal") if not rows or c not in rows[0]]
    if missing:
        raise EvalSetError(f"{sheet}: no rows, or no field {missing[0]!r} (fields: {sorted(rows[0]) if rows else []})")
    policy_of: dict[str, str] = {}
    if key is not None:
        with open(key, newline="", encoding="utf-8") as f:
            policy_of = {r["item"]: r["policy"] for r in csv.DictReader(f)}
    labelled = [(r, lab) for r in rows if (lab := _parse_label(r["refusal"], sheet, r["item"])) is not None]
    if not labelled:
        raise EvalSetError(f"{sheet}: no row has a refusal label yet (fill the `refusal` column with 1 or 0)")
    groups: dict[str, list] = {"all": labelled}
    for r, lab in labelled:
        if r["item"] in policy_of:
            groups.setdefault(f"policy:{policy_of[r['item']]}", []).append((r, lab))
    out = {"sheet": str(sheet), "labelled": len(labelled), "unlabelled": len(rows) - len(labelled), "groups": {}}
    for group, items in groups.items():
        out["groups"][group] = validate_judges([r["answer"] for r, _ in items], [lab for _, lab in items])
    return out
