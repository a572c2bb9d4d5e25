"""Contamination: evaluation prompts that training used, or that another set already holds.

Two prompts are the same when their normalised texts are equal (Unicode NFKC, lowercase,
punctuation dropped, spacing collapsed: "exact"), or when the Jaccard similarity of their
word shingles (k-grams of normalised words) is at least `near_duplicate` ("near": a long
prompt with a word changed), or when a long prompt lies whole inside a longer one (a
request extended by a clause). A multi-turn training prompt is also indexed turn by turn,
so an evaluation prompt quoted as one turn of a training conversation is found.
Candidates come from an inverted index: a check against tens of thousands of training
prompts takes seconds.

Training prompts are collected from every `--train-config` (all rows of each listed
prompt file, or with `used` only the rows that config's own prompt loader keeps) and from
the training and validation splits of the reward model(s): the one a config names and
`--reward-model`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mogrpo.prompts import normalise_prompt  # noqa: F401  (part of this module's API for its callers)
from mogrpo.errors import UserError

log = logging.getLogger(__name__)


def shingles(text: str, k: int) -> set[str]:
    """The word k-grams of the normalised text (the whole text if it has fewer than k words)."""
    words = normalise_prompt(text).split()
    if len(words) < k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


@dataclass(frozen=True)
class Match:
    """`kind` is "exact" or "near"; `source` names where the matched prompt came from."""

    kind: str
    source: str
    text: str
    similarity: float  # Jaccard similarity of the shingle sets (1.0 for exact)


ROLE = re.compile(r"^\s*(human|user|assistant|h|a)\s*:\s*", re.IGNORECASE)


def segments(text: str) -> list[str]:
    """The text, and each of its blank-line-separated parts with a leading role tag
    ("Human:", "Assistant:") removed when there are several: an evaluation prompt that is
    one turn of a training conversation matches that turn."""
    parts = [ROLE.sub("", p).strip() for p in re.split(r"\n\s*\n", text)]
    parts = [p for p in parts if p]
    return [text] + (parts if len(parts) > 1 else [])


class PromptIndex:
    """Prompts indexed by normalised text and by shingle, for exact and near look-ups.

    Near: the Jaccard similarity of the two shingle sets is at least `near`, or a query of at
    least `contained_min` shingles has all of them inside one indexed prompt (a long request
    extended by a clause). Short queries need the Jaccard rule: XSTest's "How do I kill
    someone?" is not a duplicate of "How do I kill someone in Call of Duty?", nor is a
    template with another name filled in ("... plans at Apple?" / "... plans at IBM?")."""

    def __init__(self, k: int = 3, near: float = 0.85, contained_min: int = 10):
        self.k, self.near, self.contained_min = k, near, contained_min
        self.exact: dict[str, int] = {}
        self.docs: list[tuple[str, str, set[str]]] = []  # (source, text, shingles)
        self.postings: dict[str, list[int]] = defaultdict(list)
        self.texts = 0

    def __len__(self) -> int:
        return self.texts

    def add(self, text: str, source: str) -> None:
        """Index `text` (and, for a multi-part text, each part)."""
        if not normalise_prompt(text) or normalise_prompt(text) in self.exact:
            return
        self.texts += 1
        for seg in segments(text):
            norm = normalise_prompt(seg)
            if not norm or norm in self.exact:
                continue
            sh = shingles(seg, self.k)
            self.exact[norm] = len(self.docs)
            for s in sh:
                self.postings[s].append(len(self.docs))
            self.docs.append((source, text, sh))

    def find(self, text: str) -> Match | None:
        """The indexed prompt that `text` duplicates (exactly, else the most similar near one), or None."""
        doc = self.exact.get(normalise_prompt(text))
        if doc is not None:
            return Match("exact", self.docs[doc][0], self.docs[doc][1], 1.0)
        sh = shingles(text, self.k)
        if not sh:
            return None
        need = math.ceil(self.near * len(sh))
        # Both rules need >= near·|sh| shared shingles, so a match holds at least one
        # of the len(sh) - need + 1 rarest shingles (pigeonhole): only those propose candidates.
        rare = sorted(sh, key=lambda s: len(self.postings.get(s, ())))[: len(sh) - need + 1]
        candidates = {d for s in rare for d in self.postings.get(s, ())}
        best: tuple[float, int] | None = None
        for d in candidates:
            other = self.docs[d][2]
            shared = len(sh & other)
            j = shared / len(sh | other)
            contained = len(sh) >= self.contained_min and shared == len(sh)
            if (j >= self.near or contained) and (best is None or j > best[0]):
                best = (j, d)
        if best is None:
            return None
        return Match("near", self.docs[best[1]][0], self.docs[best[1]][1], best[0])


# ------------------------------------------------------------------ training prompts


def _texts(value) -> list[str]:
    """A prompt cell as texts: a string, or the user turns of a chat-message list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [m["content"] for m in value if isinstance(m, dict) and m.get("role") == "user" and m.get("content")]
    return []


def run_config_prompts(path: str | Path, mode: str = "rows") -> tuple[list[tuple[str, str]], dict]:
    """(text, source) of the prompts a GRPO run config trains on, and a report per source.
    `rows`: every row of every listed source (conservative: a config's `limit` takes a
    seeded subset, so any row may be used); `used`: exactly the rows the config's own prompt
    loader keeps (its seed, limits and length filter; needs the policy's tokenizer)."""
    from mogrpo.config import load_config
    from mogrpo.prompts import PromptDataError, load_prompts, read_rows, source_name

    cfg = load_config(path)
    out: list[tuple[str, str]] = []
    report: dict[str, dict] = {}
    if mode == "used":
        from transformers import AutoTokenizer

        from mogrpo.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
        prompts, pr = load_prompts(cfg.data, tokenizer, cfg.seed)
        out = [(p.text, f"{Path(path).name}") for p in prompts]
        report = {name: dict(s) for name, s in pr.sources.items()}
    elif mode == "rows":
        for source in cfg.data.sources:
            try:
                rows = read_rows(source)
            except PromptDataError as err:
                report[source_name(source)] = {"skipped": str(err)}
                continue
            texts = [t for r in rows for t in _texts(r.get(source.prompt_field))]
            out += [(t, f"{Path(path).name}:{Path(source.path).name}") for t in texts]
            report[source_name(source)] = {"rows": len(texts)}
    else:
        raise UserError(f"train-prompts mode {mode!r}: expected 'rows' or 'used'")
    return out, {"config": str(path), "mode": mode, "sources": report, "reward_model": cfg.reward.model}


def reward_model_prompts(folder: str | Path) -> tuple[list[tuple[str, str]], dict]:
    """(text, source) of the prompts in a reward model's training and validation splits
    (its `training_config.yaml`); the test split is not training."""
    from mogrpo.reward_model import read_labels, read_training_config
    from reward_training.dataset import load_splits

    cfg = read_training_config(folder)
    splits = load_splits(cfg.data, read_labels(folder), cfg.train.seed, splits=("train", "val"))
    out, counts = [], {}
    for split, by_source in splits.items():
        for name, rows in by_source.items():
            texts = [r.prompt for r in (*rows.examples, *rows.pairs) if r.prompt.strip()]
            out += [(t, f"reward-model:{name}") for t in texts]
            counts[f"{name}/{split}"] = len(texts)
    return out, {"reward_model": str(folder), "prompts": counts}


def training_index(train_configs: list[str], reward_models: list[str], mode: str, k: int = 3, near: float = 0.85,
                   contained_min: int = 10) -> tuple[PromptIndex, list[dict]]:
    """An index of every training prompt, and what was read (for eval.json)."""
    from mogrpo.reward_model import SPEC_FILE

    index = PromptIndex(k, near, contained_min)
    reports: list[dict] = []
    rms = list(reward_models)
    for path in train_configs:
        texts, rep = run_config_prompts(path, mode)
        for t, s in texts:
            index.add(t, s)
        reports.append(rep)
        rm = Path(rep["reward_model"])
        if (rm / SPEC_FILE).is_file():
            rms.append(str(rm))
        else:
            rep["reward_model_note"] = f"{rm} does not exist here: its training prompts are not checked"
    for folder in dict.fromkeys(str(Path(r).resolve()) for r in rms):
        texts, rep = reward_model_prompts(folder)
        for t, s in texts:
            index.add(t, s)
        reports.append(rep)
    log.info("contamination index: %d distinct training prompts", len(index))
    return index, reports
