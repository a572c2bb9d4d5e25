"""`make bench`: every benchmark in one run; results merged into runs/bench/results.json.

    .venv/bin/python -m benchmarks.run [--only weight_sync|reward|rollout|pipeline|step]
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {"reward": "benchmarks.reward_throughput", "weight_sync": "benchmarks.weight_sync",
              "rollout": "benchmarks.rollout_throughput", "pipeline": "benchmarks.pipeline",
              "step": "benchmarks.step"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run just these")
    args = parser.parse_args(argv)
    for name in args.only or list(BENCHMARKS):
        importlib.import_module(BENCHMARKS[name]).main([])


if __name__ == "__main__":
    main()
