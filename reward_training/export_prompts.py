"""The prompts of one reward-training source in chosen splits of a reward model (by default
those it trained or validated on), as a prompt file for a GRPO run (JSON lines: `prompt`, `request` = harmful / benign, `source`,
`split`).

    python -m reward_training.export_prompts --model runs/reward-model --source xstest \\
        --out runs/prompts/xstest_reward_trainval.jsonl

A policy trained on these prompts leaves the reward model's test split held out for both,
which is where the evaluation harness measures XSTest. The split is the one the model's own
`training_config.yaml` assigns, so the file matches the model it was exported from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mogrpo.atomic import atomic_write_text
from mogrpo.errors import UserError, report
from mogrpo.prompts import normalise_prompt
from mogrpo.reward_model import read_labels, read_training_config
from reward_training.dataset import load_splits


def trained_prompts(model: str | Path, source: str, splits: tuple[str, ...] = ("train", "val")) -> list[dict]:
    """One row per distinct prompt of `source` in `splits` of the reward model at `model`;
    `request` comes from the rows' `harmful_request` target ("" where the source has none)."""
    folder = Path(model)
    cfg = read_training_config(folder)
    if source not in cfg.data.sources or not cfg.data.sources[source].enabled:
        used = sorted(n for n, s in cfg.data.sources.items() if s.enabled)
        raise UserError(f"--source {source!r}: reward model {folder} did not train on it (its sources: {used})")
    data = cfg.data.model_copy(update={"sources": {source: cfg.data.sources[source]}})
    rows: dict[str, dict] = {}
    labels = sorted({*read_labels(folder), "harmful_request"})  # the request's kind even where the model lacks the label
    for split, by_source in load_splits(data, labels, cfg.train.seed, splits=splits).items():
        found = by_source.get(source)
        for ex in (*found.examples, *found.pairs) if found else ():
            harmful = getattr(ex, "targets", {}).get("harmful_request")
            request = "" if harmful is None else ("harmful" if harmful >= 0.5 else "benign")
            rows.setdefault(normalise_prompt(ex.prompt),
                            {"prompt": ex.prompt, "request": request, "source": source, "split": split})
    if not rows:
        raise UserError(f"reward model {folder}: no prompt of source {source!r} in splits {list(splits)}")
    return sorted(rows.values(), key=lambda r: r["prompt"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="reward model folder (runs/reward-model)")
    parser.add_argument("--source", required=True, help="a reward-training source name, e.g. xstest")
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    parser.add_argument("--split", action="append", choices=("train", "val", "test"), default=None,
                        help="splits to export (repeatable; default train and val; test = the model's held-out prompts, "
                             "for evaluating a run, never for training one)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    args = parser.parse_args(argv)
    try:
        rows = trained_prompts(args.model, args.source, tuple(args.split or ("train", "val")))
    except UserError as err:
        return report(err, args.debug)
    atomic_write_text(Path(args.out), "".join(json.dumps(r) + "\n" for r in rows))
    counts = {k: sum(r["request"] == k for r in rows) for k in ("harmful", "benign")}
    print(f"wrote {args.out}: {len(rows)} prompts of {args.source} ({counts['harmful']} harmful, "
          f"{counts['benign']} benign) from {args.model}'s splits {args.split or ['train', 'val']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
