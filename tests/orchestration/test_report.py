"""`make report`: PNG panels of a run's metrics, only for what the run logged."""

import json

import pytest

from mogrpo.errors import MissingFileError, UserError
from orchestration.report import PANELS, main, moving_average, series, write_report


def write_metrics(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_panels_for_the_logged_metrics(tmp_path):
    records = [{"step": 0, "policy_version": 0, "eval/harmful_refusal": 0.1}]
    records += [{"step": s, "reward/mean": 0.1 * s, "reward/safety": 0.5, "reward/refusal": 0.2, "kl": 0.01 * s,
                 "loss": -0.1, "time/train": 10.0, "time/generate": 2.0, "time/step": 12.5,
                 "rollout/refusal_rate/harmful": 0.3, "reward/restarts": 0, "pipeline/staleness_max": 1,
                 "pipeline/learner_idle": 0.2, "pipeline/rollout_idle": 0.7} for s in range(1, 31)]
    records.append({"step": 30, "eval/harmful_refusal": 0.6})
    write_metrics(tmp_path / "run", records)
    files = write_report(tmp_path / "run")
    names = sorted(f.name for f in files)
    assert names == sorted(["reward.png", "reward_labels.png", "kl_clip.png", "loss.png", "refusals.png",
                            "held_out.png", "time.png", "staleness.png", "idle.png", "overview.png"])
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000 for f in files)
    # labels exclude the combined reward and the replicas' restarts; time excludes the whole step
    panel = {p.name: p.keys for p in PANELS}
    assert set(series(records, panel["reward_labels"])) == {"reward/safety", "reward/refusal"}
    assert set(series(records, panel["idle"])) == {"pipeline/learner_idle", "pipeline/rollout_idle"}
    assert series(records, r"eval/.*") == {"eval/harmful_refusal": ([0, 30], [0.1, 0.6])}


def test_moving_average_is_trailing():
    assert moving_average([1, 2, 3, 4, 5, 6], 3) == [1, 1.5, 2, 3, 4, 5]


def test_bad_runs_are_named(tmp_path, capsys):
    with pytest.raises(MissingFileError, match="nope/metrics.jsonl not found"):
        write_report(tmp_path / "nope")
    write_metrics(tmp_path / "empty", [])
    with pytest.raises(UserError, match="is empty"):
        write_report(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\n{oops\n')
    assert main([str(tmp_path / "bad")]) == 2
    assert "metrics.jsonl, line 2: not JSON" in capsys.readouterr().err
