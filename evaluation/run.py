"""One evaluation, start to end: check the policies and the judges, select the held-out
prompts (de-duplicated, contamination removed, length-checked, `--limit`), generate and
score, then write eval.json, report.md, chart.png and answers.parquet."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation import contamination as cont
from evaluation.capability import reference_logliks
from evaluation.generate import Policy, PolicyError, check_policy, ensure_answers
from evaluation.judges import export_blind, format_validation, judge_all, load_human_labels, validate_judges
from evaluation.metrics import compare, policy_metrics
from evaluation.ranking import ranking_metrics, refusal_logprobs
from evaluation.report import NOT_INDEPENDENT, write_outputs
from evaluation.sets import EvalConfig, Row, limit_rows, load_set
from mogrpo.errors import MissingFileError, UserError
from mogrpo.prompts import to_messages

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Options:
    policies: list[tuple[str, str]]  # (name, model reference); "base" among them
    out: Path
    train_configs: list[str] = field(default_factory=lambda: ["cluster_configs/cpu_smoke.yaml"])
    train_prompts: str = "rows"
    reward_model: str | None = None
    limit: int | None = None
    export_blind: int = 0
    system_prompts: dict[str, str] = field(default_factory=dict)  # policy name -> system prompt


def parse_policies(specs: list[str], base_default: str | None) -> list[tuple[str, str]]:
    """`NAME=REF` or `REF` (named after its folder); `base` is added from `base_default` if missing."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, ref = spec.split("=", 1) if "=" in spec else (Path(spec.rstrip("/")).name, spec)
        if not NAME.match(name):
            raise PolicyError(f"--policy {spec!r}: name {name!r} must be letters, digits, '_', '-' or '.'")
        if name in dict(out):
            raise PolicyError(f"--policy {spec!r}: the name {name!r} is given twice")
        out.append((name, ref))
    if "base" not in dict(out):
        if base_default is None:
            raise PolicyError("no policy is named 'base': give --policy base=PATH (the model before training)")
        out.insert(0, ("base", base_default))
    return sorted(out, key=lambda p: p[0] != "base")


def parse_system_prompts(specs: list[str], policy_names: list[str]) -> dict[str, str]:
    """`NAME=TEXT` or `NAME=@FILE`, for a policy named by --policy."""
    out: dict[str, str] = {}
    for spec in specs:
        name, text = spec.split("=", 1) if "=" in spec else ("", spec)
        if name not in policy_names:
            raise PolicyError(f"--system-prompt {spec[:60]!r}: expected NAME=TEXT or NAME=@FILE with NAME one of the "
                              f"--policy names {policy_names}")
        if name in out:
            raise PolicyError(f"--system-prompt: policy {name!r} is given two system prompts")
        if text.startswith("@"):
            file = Path(text[1:])
            if not file.is_file():
                raise MissingFileError(f"--system-prompt {name}=@{file}: no such file")
            text = file.read_text(encoding="utf-8").strip()
        if not text.strip():
            raise PolicyError(f"--system-prompt {name}: the system prompt is empty")
        out[name] = text
    return out


def select_rows(cfg: EvalConfig, opts: Options, tokenizer, system_prompt: str | None = None
                ) -> tuple[list[Row], dict, dict]:
    """The prompts to evaluate, and per set what was left out and why (a prompt is too long
    if it is with `system_prompt`, the longest any policy is given, so every policy gets the
    same prompts)."""
    c = (cfg.contamination.shingle, cfg.contamination.near_duplicate, cfg.contamination.contained_min_shingles)
    index, sources = cont.training_index(opts.train_configs, [opts.reward_model] if opts.reward_model else [],
                                         opts.train_prompts, *c)
    seen = cont.PromptIndex(*c)
    rows, report = [], {}
    for name, sc in cfg.sets.items():
        info = {"kind": sc.kind, "path": str(cfg.data_path(sc.path).resolve()), "rows": 0, "training_exact": 0,
                "training_near": 0, "training_sources": {}, "duplicate": 0, "duplicate_of": {}, "too_long": 0}
        kept = []
        set_rows = load_set(name, cfg)
        info["rows"] = len(set_rows)
        for r in set_rows:
            m = index.find(r.prompt)
            if m is not None:
                info[f"training_{m.kind}"] += 1
                info["training_sources"][m.source] = info["training_sources"].get(m.source, 0) + 1
                continue
            d = seen.find(r.prompt)
            if d is not None:
                info["duplicate"] += 1
                info["duplicate_of"][d.source] = info["duplicate_of"].get(d.source, 0) + 1
                continue
            seen.add(r.prompt, name)
            messages = to_messages(r.prompt, system_prompt)
            n_tok = len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
            if n_tok > cfg.generation.max_prompt_tokens:
                info["too_long"] += 1
                continue
            kept.append(r)
        info["held_out"] = len(kept)
        kept = limit_rows(kept, opts.limit, cfg.seed)
        info["evaluated"] = len(kept)
        report[name] = info
        rows += kept
        print(f"set {name:<32} {info['rows']:>4} rows, {info['training_exact'] + info['training_near']:>4} in training, "
              f"{info['duplicate']:>3} duplicates, {info['too_long']} too long -> {info['held_out']:>4} held out, "
              f"{info['evaluated']:>4} evaluated", flush=True)
    return rows, report, {"training_prompts": len(index), "sources": sources}


def score_reward(folder: str, table: list[dict]) -> list[str]:
    """Adds rm_<label> to every answer row; returns the labels."""
    from mogrpo.reward_model import load_reward_model

    rm = load_reward_model(folder, threads=2, device="cpu")
    print(f"reward model {folder}: scoring {len(table)} answers (labels {rm.labels}; NOT independent)", flush=True)
    scores = rm.score([r["prompt"] for r in table], [r["answer"] for r in table])
    for i, r in enumerate(table):
        for label in rm.labels:
            r[f"rm_{label}"] = float(scores[label][i])
    return list(rm.labels)


def reward_direction(folder: str, table: list[dict], train_config: str) -> dict[str, dict]:
    """Per policy: does the reward (under the train config's aggregation) prefer a refusal to
    the policy's answer on harmful prompts, and the answer on benign and XSTest safe ones?
    (reward_training/direction.py; answers that refuse are left out.)"""
    from mogrpo.config import load_config
    from mogrpo.reward_model import load_reward_model
    from reward_training.direction import DirectionSet, cached_scorer, direction_metrics

    from mogrpo.reward_aggregate import AggregationError, check_aggregation

    model = load_reward_model(folder, threads=2, device="cpu")
    aggregation = load_config(train_config).reward.aggregation
    try:
        check_aggregation(aggregation, model.labels)
    except AggregationError as err:
        print(f"reward direction skipped: {err}", flush=True)
        return {}
    score = cached_scorer(model.score)
    out: dict[str, dict] = {}
    for policy in dict.fromkeys(t["policy"] for t in table):
        sets = []
        for kind, want_refusal in (("harmful", True), ("benign", False), ("xstest_safe", False)):
            rows = [t for t in table if t["policy"] == policy and t["kind"] == kind]
            sets.append(DirectionSet(kind, want_refusal, [t["prompt"] for t in rows], [[t["answer"]] for t in rows]))
        out[policy] = direction_metrics(score, aggregation, sets)
    return out


def evaluate(cfg: EvalConfig, opts: Options) -> dict:
    """Run the whole evaluation into `opts.out`; returns eval.json's content."""
    from transformers import AutoTokenizer

    t0 = time.time()
    if opts.reward_model and not Path(opts.reward_model).is_dir():
        raise MissingFileError(f"--reward-model {opts.reward_model}: no such folder")
    policies: list[Policy] = [check_policy(n, ref, opts.system_prompts.get(n)) for n, ref in opts.policies]
    texts, truth = load_human_labels(cfg)
    validation = validate_judges(texts, truth)
    print(format_validation(validation), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(policies[0].path)
    longest_system_prompt = max(opts.system_prompts.values(), key=len, default=None)
    rows, set_report, sources = select_rows(cfg, opts, tokenizer, longest_system_prompt)
    if not rows:
        raise UserError("no prompt is left to evaluate after the contamination check (see the set lines above)")
    opts.out.mkdir(parents=True, exist_ok=True)
    cap_rows = [r for r in rows if r.set == cfg.capability.set]
    answers, logliks, refusal_scores = {}, {}, {}
    for p in policies:
        answers[p.name] = ensure_answers(p, rows, cfg.generation, opts.out)
        logliks[p.name] = reference_logliks(p, cap_rows, cfg.capability.ref_max_tokens, cfg.generation.dtype, opts.out)
        if cfg.ranking.enabled:
            refusal_scores[p.name] = refusal_logprobs(p, rows, cfg.ranking.refusal_text, cfg.generation.dtype, opts.out)
    table = []
    for p in policies:
        got = [answers[p.name][r.id] for r in rows]
        calls = judge_all([a["answer"] for a in got])
        for i, (r, a) in enumerate(zip(rows, got)):
            table.append({"policy": p.name, "set": r.set, "kind": r.kind, "id": r.id, "prompt": r.prompt,
                          "answer": a["answer"], "tokens": a["tokens"], "truncated": a["truncated"],
                          **{f"judge_{j}": calls[j][i] for j in calls},
                          **({"refusal_logprob": refusal_scores[p.name][r.id]} if refusal_scores else {})})
    labels = score_reward(opts.reward_model, table) if opts.reward_model else []
    by_policy = {p.name: [t for t in table if t["policy"] == p.name] for p in policies}
    ll = {p.name: {r.id: logliks[p.name].get(r.id) for r in cap_rows} for p in policies}
    s, seed = cfg.bootstrap_samples, cfg.seed
    kinds = {name: sc.kind for name, sc in cfg.sets.items()}
    result = {
        "schema": "mogrpo-eval/1",
        "settings": {"judge": cfg.judge, "generation": cfg.generation.model_dump(), "limit": opts.limit,
                     "capability": cfg.capability.model_dump(), "ranking": cfg.ranking.model_dump(),
                     "bootstrap_samples": s, "seed": seed, "train_configs": opts.train_configs, "train_prompts": opts.train_prompts},
        "policies": {p.name: {"path": str(p.path), "system_prompt": p.system_prompt, "answers": len(by_policy[p.name]),
                              **policy_metrics(by_policy[p.name], ll[p.name], cfg.judge, kinds, labels, s, seed)}
                     for p in policies},
        "comparisons": {p.name: compare(by_policy["base"], by_policy[p.name], ll["base"], ll[p.name], cfg.judge,
                                        labels, s, seed) for p in policies if p.name != "base"},
        "judges": validation,
        "sets": set_report,
        "contamination": {**sources,
                          "left_out": {k: v["training_exact"] + v["training_near"] for k, v in set_report.items()},
                          "duplicates_across_sets": {k: v["duplicate"] for k, v in set_report.items()}},
        "reward_model": ({"path": str(opts.reward_model), "labels": labels, "independent": False,
                          "note": NOT_INDEPENDENT} if labels else None),
        "seconds": round(time.time() - t0, 1),
    }
    if refusal_scores:
        for name, rs in by_policy.items():
            result["policies"][name].update(ranking_metrics([r["refusal_logprob"] for r in rs],
                                                            [r["kind"] for r in rs], s, seed))
        if "harmful_request" in labels:  # the request judgement the reward trained the policy towards
            rs = by_policy["base"]
            result["reward_model"]["ranking"] = ranking_metrics([r["rm_harmful_request"] for r in rs],
                                                                [r["kind"] for r in rs], s, seed)
    for name, comp in result["comparisons"].items():
        result["policies"][name]["capability/ref_loglik_vs_base"] = comp["capability/ref_loglik"]
    if labels and opts.train_configs:  # the reward's direction on these answers (not independent either)
        for name, metrics in reward_direction(opts.reward_model, table, opts.train_configs[0]).items():
            result["policies"][name].update(metrics)
    files = write_outputs(result, table, opts.out)
    if opts.export_blind:
        sheet, key = export_blind(table, opts.export_blind, seed, opts.out)
        print(f"blinded sample for people to label: {sheet} (key: {key}); score it with\n"
              f"  python -m evaluation score-sheet {sheet} --key {key}", flush=True)
    print(f"wrote {', '.join(str(f) for f in files.values())} in {time.time() - t0:.0f} s", flush=True)
    return result
