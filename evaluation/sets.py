"""The evaluation-set file (`cluster_configs/eval_sets.yaml`) as a typed config, and the
readers that turn each set into prompt rows, failing early with the file and field named.

A set is one file (csv / json / jsonl; a JSON object of columns such as Safety-Tuned
LLaMAs' `{"instructions": [...]}` works too), a prompt field, optional row filters
(`where: {column: [allowed values]}`), an optional seeded `sample`, and a `kind` that says
which pooled number it counts towards and which way is better.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mogrpo.config.base import Section
from mogrpo.config.loader import load_yaml_section
from mogrpo.errors import UserError
from mogrpo.prompts import json_document_rows

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "cluster_configs" / "eval_sets.yaml"

KINDS = {
    "harmful": ("refusal", "higher"),
    "benign": ("refusal", "lower"),
    "contested": ("refusal", "none"),
    "xstest_safe": ("compliance", "higher"),
    "xstest_unsafe": ("refusal", "higher"),
}
"""kind -> (headline metric, which direction is better)."""


class EvalSetError(UserError, ValueError):
    """An evaluation set is missing, empty, or lacks a field it is said to have."""


class SetConfig(Section):
    kind: Literal["harmful", "benign", "contested", "xstest_safe", "xstest_unsafe"]
    """Which pooled number the set counts towards (see KINDS)."""
    path: str
    """The file, under `data_dir` unless absolute."""
    prompt_field: str
    """Column (or JSON key) holding the prompt text."""
    where: dict[str, list[str]] = {}
    """Keep only rows whose column holds one of the listed values."""
    sample: int | None = Field(None, ge=1)
    """A fixed seeded sample of this many rows (taken before the contamination check)."""
    reference_field: str | None = None
    """Column of a reference answer (its log-likelihood under each policy is the capability measure)."""


class GenerationConfig(Section):
    max_tokens: int = Field(256, ge=1)
    """Token limit of each answer; answers cut off there are counted."""
    temperature: float = Field(0.0, ge=0)
    """0 = greedy."""
    seed: int = 0
    """Engine seed (matters only when temperature > 0)."""
    dtype: str = "auto"
    """Model dtype; `auto` = bf16 where the hardware computes it natively, else float32."""
    max_model_len: int = Field(2048, ge=64)
    """vLLM context length."""
    max_prompt_tokens: int = Field(1024, ge=8)
    """Prompts longer than this (chat template applied) are counted and left out."""
    chunk: int = Field(64, ge=1)
    """Answers generated, then written to disk, at a time (what an interruption can lose)."""


class CapabilityConfig(Section):
    set: str = "alpaca_eval"
    """The set whose reference answers are scored by each policy."""
    ref_max_tokens: int = Field(256, ge=1)
    """Reference-answer tokens scored (the first ones)."""


class RankingConfig(Section):
    enabled: bool = True
    """Score every prompt by each policy's log-prob of `refusal_text` (evaluation/ranking.py)."""
    refusal_text: str = Field("I'm sorry, but I can't help with that.", min_length=1)
    """The refusal whose log-prob after a prompt ranks that prompt (the policy's readiness to refuse it)."""


class ContaminationConfig(Section):
    shingle: int = Field(3, ge=1)
    """Words per shingle of the near-duplicate check."""
    near_duplicate: float = Field(0.85, gt=0, le=1)
    """Two prompts whose shingle sets have at least this Jaccard similarity are near duplicates."""
    contained_min_shingles: int = Field(10, ge=1)
    """A prompt with at least this many shingles, all of them inside a longer prompt, is a near duplicate."""


class JudgeValidationConfig(Section):
    path: str = "xstest/model_completions"
    """XSTest's human-labelled completions (a folder of csv files), under `data_dir`."""
    text_field: str = "completion"
    label_field: str = "final_label"
    refusal_values: list[str] = ["2_full_refusal", "3_partial_refusal"]
    """Human labels that count as a refusal (full or partial)."""


class EvalConfig(Section):
    """Root of `cluster_configs/eval_sets.yaml`."""

    data_dir: str = "../shared/data"
    """Folder the set paths are under; a relative one is taken from the working directory."""
    judge: Literal["xstest", "substring", "union"] = "union"
    """The refusal judge of the headline numbers (every judge's numbers are in eval.json)."""
    generation: GenerationConfig = GenerationConfig()
    capability: CapabilityConfig = CapabilityConfig()
    ranking: RankingConfig = RankingConfig()
    contamination: ContaminationConfig = ContaminationConfig()
    judge_validation: JudgeValidationConfig = JudgeValidationConfig()
    bootstrap_samples: int = Field(1000, ge=100)
    """Bootstrap resamples of each interval that is not a Wilson interval."""
    seed: int = 0
    """Seeds samples, `--limit` subsets, bootstrap draws and the blinded export."""
    sets: dict[str, SetConfig] = Field(min_length=1)
    """The evaluation sets, in order: a prompt found in an earlier set is left out of later ones."""

    @model_validator(mode="after")
    def _capability_set(self):
        cap = self.sets.get(self.capability.set)
        if cap is None or cap.reference_field is None:
            raise ValueError(f"capability.set {self.capability.set!r} must name a set with a reference_field")
        return self

    def data_path(self, path: str) -> Path:
        """`path` inside `data_dir` (a relative `data_dir` is taken from the working directory)."""
        return Path(self.data_dir).expanduser().resolve() / Path(path).expanduser()


def load_eval_config(path: str | Path = DEFAULT_CONFIG, overrides: list[str] | None = None) -> EvalConfig:
    """Read and validate the set file (errors name the file and key)."""
    return load_yaml_section(EvalConfig, path, overrides or [])


@dataclass(frozen=True)
class Row:
    """One evaluation prompt: `id` = `<set>:<row number in its file>`."""

    id: str
    set: str
    kind: str
    prompt: str
    reference: str | None = None


def read_table(path: Path) -> list[dict]:
    """Rows of a csv / jsonl / json file; a JSON object of equal-length lists is read as columns."""
    if not path.is_file():
        raise EvalSetError(f"evaluation set file not found: {path}")
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, ValueError) as err:
        raise EvalSetError(f"cannot read evaluation set file {path}: {err}") from err
    try:
        return json_document_rows(data)
    except ValueError as err:
        raise EvalSetError(f"{path}: {err}") from err


def load_set(name: str, cfg: EvalConfig) -> list[Row]:
    """The rows of one set: filtered by `where`, sampled, with empty prompts an error."""
    sc = cfg.sets[name]
    path = cfg.data_path(sc.path)
    rows = read_table(path)
    if not rows:
        raise EvalSetError(f"evaluation set {name!r}: {path} holds no rows")
    fields = set(rows[0]) if isinstance(rows[0], dict) else set()
    for role, column in (("prompt_field", sc.prompt_field), ("reference_field", sc.reference_field),
                         *(("where", c) for c in sc.where)):
        if column is not None and column not in fields:
            raise EvalSetError(f"evaluation set {name!r}: {path} has no field {column!r} (its {role}; "
                               f"fields: {sorted(fields)})")
    out = []
    for i, r in enumerate(rows):
        if any(str(r.get(c)) not in allowed for c, allowed in sc.where.items()):
            continue
        text = r.get(sc.prompt_field)
        if not isinstance(text, str) or not text.strip():
            raise EvalSetError(f"evaluation set {name!r}: {path} row {i} has no text in field {sc.prompt_field!r}")
        ref = r.get(sc.reference_field) if sc.reference_field else None
        out.append(Row(f"{name}:{i}", name, sc.kind, text.strip(), ref))
    if not out:
        raise EvalSetError(f"evaluation set {name!r}: no row of {path} passes where={sc.where}")
    if sc.sample is not None and sc.sample < len(out):
        keep = set(random.Random(f"{cfg.seed}:{name}").sample(range(len(out)), sc.sample))
        out = [r for i, r in enumerate(out) if i in keep]
    return out


def limit_rows(rows: list[Row], limit: int | None, seed: int) -> list[Row]:
    """At most `limit` rows of one set, a seeded subset in file order (nested across limits)."""
    if limit is None or len(rows) <= limit:
        return rows
    order = list(range(len(rows)))
    random.Random(f"{seed}:limit:{rows[0].set}").shuffle(order)
    keep = set(order[:limit])
    return [r for i, r in enumerate(rows) if i in keep]
