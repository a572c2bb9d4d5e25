"""The config tree: every shipped YAML loads, and bad input fails early, naming the key."""

from pathlib import Path

import pytest

from mogrpo.config import ConfigError, RunConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("reward_", "eval_")))


def test_there_are_run_configs():
    names = {p.name for p in RUN_CONFIGS}
    assert {"cpu_smoke.yaml", "local_smoke.yaml", "multi_gpu.yaml"} <= names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_cluster_config_loads_and_says_how_to_run_it(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path.name} must start with a comment giving its command"
    assert "orchestration.train" in path.read_text() or "make local-smoke" in path.read_text()


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert cfg.rollout.group_size >= 2 and cfg.learner.loss.variant == "grpo"


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config(CONFIGS / "cpu_smoke.yaml", ["learner.lr=3e-6", "rollout.group_size=8", "learner.lora.enabled=true"])
    assert cfg.learner.lr == pytest.approx(3e-6)
    assert cfg.rollout.group_size == 8
    assert cfg.learner.lora.enabled is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.lrr=1e-6", "learner.lrr: unknown key"),
        ("learner.lr=fast", "learner.lr: Input should be a valid number"),
        ("rollout.group_size=1", "rollout.group_size: Input should be greater than or equal to 2"),
        ("learner.zero_stage=4", "learner.zero_stage"),
        ("nosuchsection.x=1", "nosuchsection: unknown key"),
        ("rollout.max_new_tokens=5000", "exceeds model.max_model_len"),
        ("eval.sources=[{path: held_out.json}]", "held_out.json has no tag"),
        ("reward.aggregation.gate_penalty=0.5", "reward.aggregation.gate_penalty"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "cpu_smoke.yaml", [override])
    assert message in str(err.value)


def test_in_training_eval_needs_prompts():
    with pytest.raises(ConfigError, match="eval.every is set but eval.sources is empty"):
        load_config(None, ["eval.every=5"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["learner.lr"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nlearner:\n  lr: [1e-6\n  zero_stage: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "bad.yaml" in str(err.value) and "line" in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_prompts_per_step_must_split_over_learner_ranks():
    with pytest.raises(ConfigError, match="divisible by learner.num_workers"):
        load_config(None, ["rollout.prompts_per_step=3", "learner.num_workers=2"])


@pytest.mark.parametrize("overrides, message", [
    (["rollout.partial_rollout=true"], "needs rollout.max_staleness >= 1"),
    (["rollout.partial_rollout=true", "rollout.max_staleness=1", "learner.lora.enabled=true",
      "learner.lora.sync=adapter"], "needs whole-weight sync"),
])
def test_partial_rollout_needs_overlap_and_whole_weights(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    load_config(None, ["rollout.partial_rollout=true", "rollout.max_staleness=1"])
