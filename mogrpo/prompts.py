"""Chat prompts for rollouts: read from parquet / jsonl / json / csv files (pyarrow) or a
Hugging Face data set, chat-templated, length-checked (too long prompts are counted,
reported and skipped, never truncated), and served in seeded epochs."""

from __future__ import annotations

import gzip
import json
import logging
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from mogrpo.batch import Prompt
from mogrpo.config.sections import DataConfig, PromptSource
from mogrpo.errors import UserError

log = logging.getLogger(__name__)
FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz")


class PromptDataError(UserError, ValueError):
    """A prompt source is missing, unreadable, lacks the prompt field, or yields no prompts."""


@dataclass
class PromptReport:
    """What happened to each source's rows; printed at start-up and saved in the run folder."""

    sources: dict[str, dict] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(s.get("used", 0) for s in self.sources.values())

    def summary(self) -> str:
        parts = []
        for name, s in self.sources.items():
            if "skipped" in s:
                parts.append(f"{Path(name).name}: skipped ({s['skipped']})")
            else:
                parts.append(f"{Path(name).name}: {s['used']} used, {s['too_long']} too long, {s['empty']} empty")
        return "; ".join(parts)


def normalise_prompt(text: str) -> str:
    """A prompt's identity for de-duplication and hold-out checks: NFKC, lowercase, every run
    of non-alphanumeric characters one space, trimmed.
    ("How do I  kill a Python process?" and "how do i kill a python process" are one.)"""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def is_file_ref(path: str, root: Path = Path(".")) -> bool:
    """Whether a source path names a file (relative paths taken from `root`) rather than a
    Hugging Face data set."""
    return path.endswith(FILE_SUFFIXES) or (root / path).exists() or path.startswith((".", "/", "~"))


def source_name(source: PromptSource) -> str:
    """A source's name in reports: its path, and its row filter if it has one."""
    return f"{source.path} where {source.where}" if source.where else source.path


def read_rows(source: PromptSource) -> list[dict]:
    """The rows of one source as dicts (files by suffix; otherwise a Hugging Face data set
    name) that pass its `where` filter."""
    rows = _read_all_rows(source)
    if not source.where or not rows:
        return rows
    missing = [c for c in source.where if c not in rows[0]]
    if missing:
        raise PromptDataError(f"data source {source.path}: where names column(s) {missing} it does not have "
                              f"(fields: {sorted(rows[0])})")
    kept = [r for r in rows if all(str(r.get(c)) in allowed for c, allowed in source.where.items())]
    if not kept:
        raise PromptDataError(f"data source {source.path}: no row passes where={source.where}")
    return kept


def _read_all_rows(source: PromptSource) -> list[dict]:
    path = Path(source.path).expanduser()
    if not is_file_ref(source.path):
        try:
            import datasets
        except ImportError as err:
            raise PromptDataError(
                f"data source {source.path!r} is not a file; loading Hugging Face data sets needs `pip install datasets`"
            ) from err
        try:
            return list(datasets.load_dataset(source.path, split=source.split))
        except Exception as err:
            raise PromptDataError(f"data source {source.path!r} (split {source.split!r}): {err}") from err
    if not path.is_file():
        raise PromptDataError(f"data source file not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if name.endswith(".csv"):
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path).to_pylist()
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            if ".jsonl" in name:
                return [json.loads(line) for line in f if line.strip()]
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise PromptDataError(f"cannot read data source {path}: {err}") from err
    try:
        return json_document_rows(data)
    except ValueError as err:
        raise PromptDataError(f"{path}: {err}") from err


def json_document_rows(data) -> list[dict]:
    """The rows of a parsed JSON document: a list of rows, an object holding one list of rows
    (`{"train": [...]}`), or an object of equal-length columns (`{"instructions": [...], "inputs": [...]}`;
    empty lists are ignored)."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"expected a list of rows or an object of columns, got {type(data).__name__}")
    columns = {k: v for k, v in data.items() if isinstance(v, list) and v}
    if len(columns) == 1 and all(isinstance(r, dict) for r in next(iter(columns.values()))):
        return next(iter(columns.values()))
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        sizes = {k: len(v) for k, v in data.items() if isinstance(v, list)}
        raise ValueError(f"a JSON object must hold one list of rows or non-empty columns of one length (got {sizes})")
    n = lengths.pop()
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def to_messages(value, system_prompt: str | None) -> list[dict]:
    """A prompt cell (a string, or a list of {role, content}) as chat messages."""
    if isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
    else:
        raise TypeError(f"expected a string or a list of chat messages, got {type(value).__name__}")
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n".join(m["content"] for m in messages)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def load_prompts(data: DataConfig, tokenizer, seed: int) -> tuple[list[Prompt], PromptReport]:
    """Read every source, apply the chat template, drop over-long prompts, and mix."""
    report = PromptReport()
    prompts: list[Prompt] = []
    rng = random.Random(seed)
    for use_fallback in (False, True):
        if use_fallback and prompts:
            break
        for source in data.sources:
            if source.fallback != use_fallback:
                continue
            try:
                rows = read_rows(source)
            except PromptDataError as err:
                if source.required and not source.fallback:
                    raise
                report.sources[source_name(source)] = {"skipped": str(err)}
                log.warning("prompt source skipped: %s", err)
                continue
            if rows and source.prompt_field not in rows[0]:
                raise PromptDataError(
                    f"data source {source.path}: no field {source.prompt_field!r} "
                    f"(fields: {sorted(rows[0])}); set prompt_field"
                )
            if data.shuffle:
                rng.shuffle(rows)
            stats = {"rows": len(rows), "used": 0, "too_long": 0, "empty": 0}
            for row in rows:
                if source.limit is not None and stats["used"] >= source.limit:
                    break
                value = row.get(source.prompt_field)
                if value is None or (isinstance(value, str) and not value.strip()):
                    stats["empty"] += 1
                    continue
                try:
                    messages = to_messages(value, data.system_prompt)
                except TypeError as err:
                    raise PromptDataError(f"data source {source.path}, field {source.prompt_field!r}: {err}") from None
                token_ids = encode_prompt(tokenizer, messages)
                if len(token_ids) > data.max_prompt_tokens:
                    stats["too_long"] += 1
                    continue
                text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                prompts.append(Prompt(len(prompts), text, tuple(token_ids), source.tag))
                stats["used"] += 1
            report.sources[source_name(source)] = stats
            if stats["too_long"]:
                log.warning(
                    "%s: skipped %d prompts longer than data.max_prompt_tokens=%d",
                    source.path, stats["too_long"], data.max_prompt_tokens,
                )
    if not prompts:
        raise PromptDataError(f"no usable prompts in data.sources ({report.summary() or 'nothing read'})")
    if data.shuffle:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        prompts = [Prompt(i, prompts[j].text, prompts[j].token_ids, prompts[j].tag) for i, j in enumerate(order)]
    return prompts, report


class PromptSampler:
    """Serves prompts in epochs, each a fresh seeded permutation (or in order, without
    `shuffle`); `position` is the whole state, so a resumed run continues exactly where it
    stopped. With `stratify`, each epoch spreads every tag's prompts evenly through it, so any
    run of consecutive prompts holds the tags in about their overall proportions."""

    def __init__(self, prompts: list[Prompt], seed: int, position: int = 0, shuffle: bool = True, stratify: bool = False):
        if not prompts:
            raise PromptDataError("PromptSampler needs at least one prompt")
        self.prompts = prompts
        self.seed = seed
        self.position = position
        self.shuffle = shuffle
        self.stratify = stratify
        self._cached: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._cached is None or self._cached[0] != epoch:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            order = list(range(len(self.prompts)))
            if self.shuffle:
                rng.shuffle(order)
            if self.stratify:
                order = stratified_order(order, [self.prompts[i].tag for i in order], rng)
            self._cached = (epoch, order)
        return self._cached[1]

    def take(self, n: int) -> list[Prompt]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.prompts))
            out.append(self.prompts[self._order(epoch)[i]])
            self.position += 1
        return out


def stratified_order(order: list[int], tags: list[str | None], rng: random.Random) -> list[int]:
    """`order` rearranged so that each tag's items, kept in their order, sit at even intervals:
    the k-th of a tag's n items goes to (k + u) / n, u a random offset in [0, 1) per tag, and
    the items are sorted by that place (ties broken at random). A tag holding a share s of the
    items then has s * m of any m consecutive ones, give or take one or two."""
    by_tag: dict[str | None, list[int]] = {}
    for item, tag in zip(order, tags):
        by_tag.setdefault(tag, []).append(item)
    keyed = []
    for tag in sorted(by_tag, key=str):
        items, offset = by_tag[tag], rng.random()
        keyed += [((k + offset) / len(items), rng.random(), item) for k, item in enumerate(items)]
    return [item for *_, item in sorted(keyed)]
