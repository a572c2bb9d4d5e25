"""Bad input, tried as a new user would: each mistake ends the job before any actor starts,
with one line that names the path or field (exit 2), and a traceback only with --debug."""

import json

import pytest

from mogrpo.errors import UserError
from orchestration.train import main

CONFIG = "cluster_configs/cpu_smoke.yaml"


@pytest.fixture
def base(tmp_path, quick_reward_model):
    return ["--config", CONFIG, f"output_dir={tmp_path}", "model.path=tiny-llama", f"reward.model={quick_reward_model}"]


def prompts_file(tmp_path, rows) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"data.sources=[{{path: {path}, prompt_field: prompt}}]"


@pytest.mark.parametrize("case, expected", [
    ("no_model", "/nonexistent"),
    ("not_a_reward_model", "holds no reward_model.json"),
    ("empty_prompts", "prompts.jsonl"),
    ("no_prompt_field", "no field 'prompt'"),
    ("unknown_key", "learner.lrr"),
    ("unknown_loss", "learner.loss.variant: unknown loss variant 'ppo'"),
])
def test_one_line_and_exit_2(case, expected, base, tmp_path, capsys):
    extra = {
        "no_model": ["model.path=/nonexistent"],
        "not_a_reward_model": [f"reward.model={tmp_path}"],
        "empty_prompts": [prompts_file(tmp_path, [])],
        "no_prompt_field": [prompts_file(tmp_path, [{"question": "hi"}])],
        "unknown_key": ["learner.lrr=1"],
        "unknown_loss": ["learner.loss.variant=ppo"],
    }[case]
    assert main(base + extra) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(base):
    with pytest.raises(UserError, match="/nonexistent"):
        main(base + ["model.path=/nonexistent", "--debug"])
