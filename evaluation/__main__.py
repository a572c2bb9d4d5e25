"""Command line of the safety evaluation (see evaluation/README.md).

    python -m evaluation --policy base=smollm2-135m-instruct [--policy trained=runs/x/final] [--limit 30]
                         [--reward-model runs/reward-model] [--train-config cluster_configs/cpu_smoke.yaml]
                         [--system-prompt NAME=TEXT|NAME=@FILE] [--export-blind 200] [--out runs/eval]
                         [key=value overrides of eval_sets.yaml]
    python -m evaluation score-sheet LABELLED.csv [--key blind_key.csv]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def run_main(argv: list[str]) -> int:
    from evaluation.run import Options, evaluate, parse_policies, parse_system_prompts
    from evaluation.sets import DEFAULT_CONFIG, load_eval_config

    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", action="append", default=[], metavar="[NAME=]PATH",
                   help="a policy to evaluate (repeat); one must be `base` (the model before training), else "
                        "--base is added as `base`. PATH: a model folder or a built-in name")
    p.add_argument("--system-prompt", action="append", default=[], metavar="NAME=TEXT|NAME=@FILE",
                   help="give the policy NAME this system prompt before every prompt (repeat per policy; without "
                        "it, the chat template's default): e.g. the base model prompted to refuse harm, as a "
                        "baseline for training")
    p.add_argument("--base", default=None, help="the base model when no --policy is named base "
                                                "(default: the first --train-config's model.path)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the evaluation-set YAML (default: %(default)s)")
    p.add_argument("--out", default="runs/eval", help="output folder; a rerun with the same folder resumes")
    p.add_argument("--train-config", action="append", default=None,
                   help="a GRPO run config whose prompt sources count as training (repeat; default "
                        "cluster_configs/cpu_smoke.yaml); the reward model it names is checked too")
    p.add_argument("--train-prompts", choices=("rows", "used"), default="rows",
                   help="rows: every row of a config's prompt files counts as training (conservative, default); "
                        "used: only the rows that config's prompt loader keeps (its seed, limits, length filter)")
    p.add_argument("--reward-model", default=None,
                   help="a trained reward model: its labels of every answer are reported (NOT independent) and its "
                        "training prompts are left out; without it that part is skipped")
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts per set (a seeded subset)")
    p.add_argument("--export-blind", type=int, default=0, metavar="N",
                   help="also write N answers shuffled with the policy hidden (blind_sample.csv) for people to label")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the set YAML, e.g. generation.max_tokens=128")
    args = p.parse_args(argv)
    cfg = load_eval_config(args.config, args.overrides)
    train_configs = args.train_config or ["cluster_configs/cpu_smoke.yaml"]
    base = args.base
    if base is None and not any(s.startswith("base=") for s in args.policy):
        from mogrpo.config import load_config

        base = load_config(train_configs[0]).model.path
    policies = parse_policies(args.policy, base)
    opts = Options(policies=policies, out=Path(args.out), train_configs=train_configs,
                   train_prompts=args.train_prompts, reward_model=args.reward_model, limit=args.limit,
                   export_blind=args.export_blind,
                   system_prompts=parse_system_prompts(args.system_prompt, [n for n, _ in policies]))
    evaluate(cfg, opts)
    return 0


def score_main(argv: list[str]) -> int:
    from evaluation.judges import format_validation, score_sheet

    p = argparse.ArgumentParser(prog="python -m evaluation score-sheet",
                                description="Score the judges against people's labels of a blinded sample.")
    p.add_argument("sheet", help="blind_sample.csv with the `refusal` column filled (1 = refusal, 0 = compliance)")
    p.add_argument("--key", default=None, help="blind_key.csv, to report per policy as well")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    result = score_sheet(Path(args.sheet), Path(args.key) if args.key else None)
    print(f"{result['labelled']} labelled rows ({result['unlabelled']} unlabelled skipped)")
    for group, validation in result["groups"].items():
        print(format_validation(validation, f"judges vs people's labels, {group}"))
    if args.json:
        from mogrpo.atomic import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("evaluation").setLevel(logging.INFO)
    from mogrpo.errors import UserError, report

    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return score_main(argv[1:]) if argv[:1] == ["score-sheet"] else run_main(argv)
    except UserError as err:
        return report(err, debug)


if __name__ == "__main__":
    sys.exit(main())
