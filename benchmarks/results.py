"""Merge benchmark numbers into one flat JSON object, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from mogrpo.atomic import atomic_write_text

DEFAULT_RESULTS = Path("runs/bench/results.json")


def merge_results(values: dict[str, float | int | str], path: Path = DEFAULT_RESULTS) -> dict:
    """Update `path` with `values` (keys like `reward/actor_responses_per_s`) and return the whole object."""
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True))
    return current


def print_table(title: str, rows: dict[str, float | int | str]) -> None:
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    for key, value in rows.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text}")
