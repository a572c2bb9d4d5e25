"""Plots of a run's metrics (`metrics.jsonl`), one PNG per panel and an overview.

    python -m orchestration.report runs/<name>          (make report RUN=runs/<name>)

Panels: the combined reward and each label's, KL and clip fraction, the loss, response
length and truncation, refusal rates of the rollouts and of the in-training evaluation,
staleness and dropped groups where the run logs them, and time per phase. A panel whose
metrics the run did not log is left out. Written to `<run>/report/`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mogrpo.atomic import atomic_write_file
from mogrpo.errors import MissingFileError, UserError, report


@dataclass(frozen=True)
class Panel:
    name: str  # file name stem
    title: str
    keys: str  # regular expression over metric names
    ylabel: str = ""


PANELS = [
    Panel("reward", "Combined reward (sampled responses)", r"reward/(mean|std)$"),
    Panel("reward_labels", "Reward labels (mean score)", r"reward/(?!mean$|std$|restarts$)[^/]+$", "score"),
    Panel("kl_clip", "KL to the reference and clip fraction", r"(kl|clip_frac)$"),
    Panel("loss", "Loss", r"loss$"),
    Panel("length", "Response length (tokens)", r"response_len/(mean|max)$", "tokens"),
    Panel("truncated", "Share of responses cut off at max_new_tokens", r"response/truncated_frac$", "share"),
    Panel("refusals", "Refusal rate of the rollouts, per prompt tag", r"rollout/refusal_rate(/.*)?$", "share"),
    Panel("held_out", "In-training evaluation: refusal rate on held-out prompts", r"eval/.*", "share"),
    Panel("written", "Written refusals: reward margin over their group", r"written/margin(/.*)?$", "reward"),
    Panel("staleness", "Staleness (policy versions) and dropped groups",
          r"pipeline/(staleness_mean|staleness_max|dropped_stale|buffer_groups)$"),
    Panel("idle", "Share of the step the learner waited for data, and the workers had none to generate",
          r"pipeline/(learner|rollout)_idle$", "share"),
    Panel("time", "Time per phase (s)", r"time/(?!step$)[a-z_]+$", "seconds"),
]


SMOOTH_FROM, SMOOTH_WINDOW = 20, 5  # series this long are drawn faintly, with a trailing mean on top


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (fewer at the start)."""
    return [sum(values[max(0, i - window + 1): i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: expected a run folder written by orchestration.train")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise UserError(f"{path}, line {n}: not JSON ({err})") from None
    if not records:
        raise UserError(f"{path} is empty: the run logged no step yet")
    return records


def series(records: list[dict], pattern: str) -> dict[str, tuple[list[int], list[float]]]:
    """metric name -> (steps, values) for every numeric metric whose name matches `pattern`."""
    rx, out = re.compile(pattern), {}
    for r in records:
        for key, value in r.items():
            if rx.fullmatch(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                steps, values = out.setdefault(key, ([], []))
                steps.append(r["step"])
                values.append(value)
    return dict(sorted(out.items()))


def write_report(run_dir: str | Path) -> list[Path]:
    """The run's PNG panels and `overview.png` under `<run>/report/`; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    panels = [(p, s) for p in PANELS if (s := series(records, p.keys))]
    out_dir, written = run_dir / "report", []

    def draw(ax, panel: Panel, data: dict) -> None:
        for key, (steps, values) in data.items():
            if len(steps) < SMOOTH_FROM:
                ax.plot(steps, values, marker="o", markersize=3, label=key)
                continue
            (line,) = ax.plot(steps, values, alpha=0.25)
            ax.plot(steps, moving_average(values, SMOOTH_WINDOW), color=line.get_color(),
                    label=f"{key} ({SMOOTH_WINDOW}-step mean)")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)

    def save(fig, path: Path) -> None:
        atomic_write_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(fig)
        written.append(path)

    for panel, data in panels:
        fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
        draw(ax, panel, data)
        save(fig, out_dir / f"{panel.name}.png")
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), squeeze=False, layout="constrained")
    for ax, (panel, data) in zip(axes.flat, panels):
        draw(ax, panel, data)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{run_dir.name}: {max(r['step'] for r in records)} steps", fontsize=11)
    save(fig, out_dir / "overview.png")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder (runs/<name>)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    args = parser.parse_args(argv)
    try:
        files = write_report(args.run)
    except UserError as err:
        return report(err, args.debug)
    print(f"wrote {len(files)} plots to {Path(args.run) / 'report'} (overview.png shows them all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
