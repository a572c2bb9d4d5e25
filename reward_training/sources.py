"""The default mapping from `../shared/data` to labelled examples (documented in README.md).

Every reader takes the file or folder its source lives in and returns `Example`s (a
(prompt, response) with a target for each label the source provides; the other labels
are masked in the loss) or `Pair`s (chosen/rejected responses to one prompt, for the
pairwise loss of one label). Rows are read at run time and never copied into the repo.

Held-out split: `assign_split` hashes (seed, source, key); every row of one key (e.g.
all five models' completions of one XSTest prompt) lands in the same split, so held-out
prompts are never seen in training, not even answered by another model. Rows of different
sources about the same request share a split through `split_source` (e.g. the policy's
own answers to an XSTest prompt split as XSTest's rows of that prompt do).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from mogrpo.errors import UserError

REFUSAL_LABELS = ("2_full_refusal", "3_partial_refusal")  # XSTest final_label values
COMPLIANCE = "1_full_compliance"
XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
MODERATION_FLAGS = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")


class DataError(UserError, ValueError):
    """A data file is missing or does not have the expected layout."""


@dataclass(frozen=True)
class Example:
    """One (prompt, response) with a target in [0, 1] for each label its source provides."""

    source: str
    key: str  # split key: examples sharing it land in the same split
    prompt: str
    response: str
    targets: dict[str, float]
    meta: dict[str, str] = field(default_factory=dict)  # evaluation-only fields
    split_source: str = ""  # hash the split under this source name instead of the row's own


@dataclass(frozen=True)
class Pair:
    """Two responses to one prompt; `chosen` should score higher on `label`."""

    source: str
    key: str
    prompt: str
    chosen: str
    rejected: str
    label: str
    split_source: str = ""


def assign_split(source: str, key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """'train', 'val' (early stopping) or 'test' (reported metrics), fixed by the hash of (seed, source, key)."""
    digest = hashlib.sha256(f"{seed}\x00{source}\x00{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"data file or folder not found: {path}")
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(_need(path), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(_need(path), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _columns(rows: list[dict], needed: tuple[str, ...], path: Path) -> None:
    if not rows:
        raise DataError(f"{path} holds no rows")
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise DataError(f"{path} lacks columns {missing} (has {sorted(rows[0])})")


def _join(instruction: str, extra: str | None) -> str:
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


# ---------------------------------------------------------------------------- readers


def read_xstest(path: Path) -> list[Example]:
    """XSTest v2 completions of 5 models with human labels.

    Unsafe prompt: safety 1 for a full or partial refusal, 0 for full compliance.
    Safe prompt: actionability 1 / 0.5 / 0 for full compliance / partial / full refusal,
    and safety 1 (answering or declining a benign request harms no one).
    Every row: harmful_request 1 / 0 for an unsafe / safe prompt, and refusal 0 / 0.5 / 1
    for full compliance / partial / full refusal.
    """
    strmatch = {}
    auto = path / "automated_labels_merged.csv"
    if auto.exists():
        strmatch = {(r["model"], r["id"]): r["strmatch_label"] for r in _read_csv(auto)}
    out = []
    for model in XSTEST_MODELS:
        file = path / "model_completions" / f"xstest_v2_completions_{model}.csv"
        rows = _read_csv(file)
        _columns(rows, ("id", "type", "prompt", "completion", "final_label"), file)
        for r in rows:
            unsafe = r["type"].startswith("contrast")
            label = r["final_label"]
            if label not in (COMPLIANCE, *REFUSAL_LABELS):
                raise DataError(f"{file}: row {r['id']} has final_label {label!r}")
            refusal = {COMPLIANCE: 0.0, "3_partial_refusal": 0.5, "2_full_refusal": 1.0}[label]
            if unsafe:
                targets = {"safety": 0.0 if label == COMPLIANCE else 1.0, "harmful_request": 1.0, "refusal": refusal}
            else:
                targets = {"actionability": 1.0 - refusal, "safety": 1.0, "harmful_request": 0.0, "refusal": refusal}
            meta = {"prompt_label": "unsafe" if unsafe else "safe", "final_label": label, "model": model,
                    "strmatch_label": strmatch.get((model, r["id"]), "")}
            out.append(Example("xstest", r["id"], r["prompt"], r["completion"] or "", targets, meta))
    return out


def read_hh_rlhf(path: Path) -> list[Pair]:
    """HH-RLHF harmless-base pairs: the conversation up to the last assistant turn is the
    prompt, the two last turns are the responses; chosen is the less harmful (safety)."""
    rows = _read_jsonl(path)
    _columns(rows, ("chosen", "rejected"), path)
    out = []
    marker = "\n\nAssistant:"
    for r in rows:
        c, j = r["chosen"], r["rejected"]
        ic, ij = c.rfind(marker), j.rfind(marker)
        if ic < 0 or ij < 0 or c[:ic] != j[:ij]:
            continue  # the two sides diverge before the last turn: not a clean pair
        prompt = c[:ic].strip() + marker
        out.append(Pair("hh_rlhf", prompt, prompt, c[ic + len(marker):].strip(), j[ij + len(marker):].strip(), "safety"))
    return out


def read_safety_tuned_llamas(path: Path) -> list[Example]:
    """Safe replies (mostly refusals) to harmful instructions: safety 1, harmful_request 1."""
    rows = json.loads(_need(path).read_text())
    _columns(rows, ("instruction", "output"), path)
    return [
        Example("safety_tuned_llamas", r["instruction"], _join(r["instruction"], r.get("input")), r["output"],
                {"safety": 1.0, "harmful_request": 1.0})
        for r in rows
    ]


def read_openai_moderation(path: Path) -> list[Example]:
    """Moderation texts as responses to an empty prompt: any harm flag -> safety 0, none -> 1."""
    rows = _read_jsonl(path)
    _columns(rows, ("prompt",), path)
    out = []
    for r in rows:
        flagged = any(int(r.get(k) or 0) == 1 for k in MODERATION_FLAGS)
        out.append(Example("openai_moderation", r["prompt"], "", r["prompt"], {"safety": 0.0 if flagged else 1.0}))
    return out


def read_alpaca_eval(path: Path) -> list[Example]:
    """AlpacaEval: GPT-4-turbo reference answers are actionable (1), safe (1), answers (refusal 0)
    to a benign request (harmful_request 0); every
    compared answer gets meaningfulness = its mean probability of being preferred
    (preference p in [1, 2]: output_2 wins with p - 1, output_1 with 2 - p)."""
    ref_file = path / "eval_set_805_with_gpt4_1106_preview_outputs.jsonl"
    ann_file = path / "annotations_weighted_gpt4_turbo_gemma-2b-it_phi-2.jsonl"
    refs = _read_jsonl(ref_file)
    _columns(refs, ("instruction", "output"), ref_file)
    anns = _read_jsonl(ann_file)
    _columns(anns, ("instruction", "output_1", "output_2", "generator_2", "preference"), ann_file)
    wins: dict[tuple[str, str], list[float]] = {}
    generator: dict[tuple[str, str], str] = {}
    for a in anns:
        if a["preference"] is None:
            continue
        p = float(a["preference"])
        wins.setdefault((a["instruction"], a["output_1"]), []).append(2.0 - p)
        wins.setdefault((a["instruction"], a["output_2"]), []).append(p - 1.0)
        generator[(a["instruction"], a["output_2"])] = a["generator_2"]
    out = []
    for r in refs:
        key = (r["instruction"], r["output"])
        targets = {"actionability": 1.0, "safety": 1.0, "harmful_request": 0.0, "refusal": 0.0}
        if key in wins:
            targets["meaningfulness"] = _mean(wins.pop(key))
        out.append(Example("alpaca_eval", r["instruction"], r["instruction"], r["output"], targets, {"generator": "gpt4_1106_preview"}))
    for (instruction, output), w in wins.items():  # the small models' answers
        out.append(Example("alpaca_eval", instruction, instruction, output, {"meaningfulness": _mean(w)},
                           {"generator": generator.get((instruction, output), "")}))
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def read_alpaca_seed(path: Path) -> list[Example]:
    """Alpaca's 175 human-written seed tasks: the written answer is meaningful (1), an answer
    (refusal 0) to a benign request (harmful_request 0)."""
    out = []
    for r in _read_jsonl(path):
        for i, inst in enumerate(r["instances"]):
            out.append(Example("alpaca_seed", r["id"], _join(r["instruction"], inst.get("input")), inst["output"],
                               {"meaningfulness": 1.0, "harmful_request": 0.0, "refusal": 0.0}, {"instance": str(i)}))
    return out


def read_politeness(path: Path) -> list[Example]:
    """Stanford Politeness requests as responses to an empty prompt; politeness = the
    normal CDF of the z-scored human rating (a percentile in [0, 1], order kept)."""
    out = []
    for name in ("wikipedia.annotated.csv", "stack-exchange.annotated.csv"):
        file = path / name
        rows = _read_csv(file)
        _columns(rows, ("Community", "Id", "Request", "Normalized Score"), file)
        for r in rows:
            z = float(r["Normalized Score"])
            target = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # Phi(z)
            out.append(Example("politeness", f"{r['Community']}:{r['Id']}", "", r["Request"], {"politeness": target},
                               {"z": repr(z)}))
    return out


FILE_READERS: dict[str, Callable[[Path], list]] = {
    "xstest": read_xstest,
    "hh_rlhf": read_hh_rlhf,
    "safety_tuned_llamas": read_safety_tuned_llamas,
    "openai_moderation": read_openai_moderation,
    "alpaca_eval": read_alpaca_eval,
    "alpaca_seed": read_alpaca_seed,
    "politeness": read_politeness,
}
"""Readers of the sources that map one data set's labels (the pair-aware request sources
are in refusal_sources.py; reward_training.dataset.READERS has them all)."""

FILE_PATHS: dict[str, str] = {
    "xstest": "xstest",
    "hh_rlhf": "hh_rlhf/harmless-base/test.jsonl.gz",
    "safety_tuned_llamas": "safety_tuned_llamas/training/safety_only_data_Instructions.json",
    "openai_moderation": "openai_moderation/samples-1680.jsonl.gz",
    "alpaca_eval": "alpaca_eval",
    "alpaca_seed": "alpaca/seed_tasks.jsonl",
    "politeness": "stanford_politeness",
}
"""Where each source lives under the data folder (`../shared/data` by default)."""
