"""The training config and the default mapping from ../shared/data (read at run time)."""

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mogrpo.config import ConfigError, load_yaml_section
from mogrpo.config.reward_training import REWARD_SOURCES, RewardDataConfig, RewardTrainConfig
from reward_training.dataset import load_splits
from reward_training.dataset import DEFAULT_PATHS, READERS
from reward_training.sources import assign_split

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"


def test_reward_yaml_configs_load_and_say_how_to_run():
    files = sorted(CONFIGS.glob("reward_*.yaml"))
    assert files, "cluster_configs/reward_default.yaml is missing"
    for f in files:
        first = f.read_text().splitlines()[0]
        assert first.startswith("#") and ("make reward" in first or "reward_training.train" in first), f
        cfg = load_yaml_section(RewardTrainConfig, f)
        assert set(cfg.data.sources) <= set(REWARD_SOURCES)


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("data:\n  sources:\n    xstest: {}\n    helpsteer: {}\n")
    with pytest.raises(ConfigError, match="data.sources.*unknown source 'helpsteer'"):
        load_yaml_section(RewardTrainConfig, f)
    with pytest.raises(ConfigError, match=r"data: .*val_fraction \(0.5\) \+ test_fraction \(0.5\) leaves nothing to train on"):
        load_yaml_section(RewardTrainConfig, f, ["data.sources={}", "data.val_fraction=0.5", "data.test_fraction=0.5"])
    with pytest.raises(ConfigError, match="train.lr"):
        load_yaml_section(RewardTrainConfig, f, ["data.sources={}", "train.lr=0"])
    f.write_text("model:\n  labels: [safety, refusal]\n  request_encoder: {labels: [harmful_request], layers: [4]}\n")
    with pytest.raises(ConfigError, match=r"model: .*request_encoder.labels \['harmful_request'\] are not in model.labels"):
        load_yaml_section(RewardTrainConfig, f)
    with pytest.raises(ConfigError, match="model.request_encoder.layers"):
        load_yaml_section(RewardTrainConfig, f, ["model.request_encoder.layers=[]"])


def test_every_source_has_a_reader_and_a_path():
    assert set(READERS) == set(REWARD_SOURCES) == set(DEFAULT_PATHS)


def test_split_is_fixed_by_seed_and_key():
    keys = [f"k{i}" for i in range(4000)]
    a = [assign_split("xstest", k, 0, 0.1, 0.2) for k in keys]
    assert a == [assign_split("xstest", k, 0, 0.1, 0.2) for k in keys]  # same seed, same split
    assert a != [assign_split("xstest", k, 1, 0.1, 0.2) for k in keys]  # another seed, another split
    share = Counter(a)
    assert abs(share["test"] / 4000 - 0.2) < 0.03 and abs(share["val"] / 4000 - 0.1) < 0.03


def test_missing_data_names_the_path(tmp_path):
    cfg = RewardDataConfig(data_dir=str(tmp_path), holdout=[])
    with pytest.raises(ValueError, match=str(tmp_path / "xstest")):
        load_splits(cfg, ["safety", "actionability"])
    cfg = RewardDataConfig(data_dir=str(tmp_path))  # the evaluation sets to hold out are missing too
    with pytest.raises(ValueError, match=str(tmp_path / "harmbench_advbench/refusal_direction/harmful_test.json")):
        load_splits(cfg, ["safety", "actionability"])


def test_default_mapping_on_shared_data(shared_data):
    xs = READERS["xstest"](shared_data / DEFAULT_PATHS["xstest"])
    assert len(xs) == 2250
    for e in xs:
        refused = e.meta["final_label"] != "1_full_compliance"
        refusal = {"1_full_compliance": 0.0, "3_partial_refusal": 0.5, "2_full_refusal": 1.0}[e.meta["final_label"]]
        if e.meta["prompt_label"] == "unsafe":  # refusing an unsafe request is safe
            assert e.targets == {"safety": 1.0 if refused else 0.0, "harmful_request": 1.0, "refusal": refusal}
        else:  # complying with a safe request is actionable; partial refusal is half
            assert e.targets == {"actionability": 1.0 - refusal, "safety": 1.0, "harmful_request": 0.0,
                                 "refusal": refusal}
    hh = READERS["hh_rlhf"](shared_data / DEFAULT_PATHS["hh_rlhf"])
    assert len(hh) > 2200 and all(p.prompt.endswith("Assistant:") and p.label == "safety" for p in hh)
    assert all(p.chosen != p.rejected for p in hh[:200])
    pol = READERS["politeness"](shared_data / DEFAULT_PATHS["politeness"])
    by_z = sorted(pol, key=lambda e: float(e.meta["z"]))
    assert by_z[0].targets["politeness"] < 0.05 and by_z[-1].targets["politeness"] > 0.95
    mod = READERS["openai_moderation"](shared_data / DEFAULT_PATHS["openai_moderation"])
    assert Counter(e.targets["safety"] for e in mod) == {1.0: 1158, 0.0: 522}
    ae = READERS["alpaca_eval"](shared_data / DEFAULT_PATHS["alpaca_eval"])
    refs = [e for e in ae if e.meta["generator"] == "gpt4_1106_preview"]
    assert len(refs) == 805 and all(e.targets["actionability"] == 1.0 for e in refs)
    assert all(0.0 <= e.targets["meaningfulness"] <= 1.0 for e in ae)


def test_held_out_prompts_never_reach_training(shared_data):
    cfg = RewardDataConfig(data_dir=str(shared_data), sources={"xstest": {}, "politeness": {"limit": 500}})
    splits = load_splits(cfg, ["safety", "actionability", "politeness"])
    where = defaultdict(set)
    for split, by_source in splits.items():
        for e in by_source["xstest"].examples:
            where[e.key].add(split)
    assert all(len(s) == 1 for s in where.values())  # the 5 models' answers to a prompt share a split
    assert sum(len(r) for by in splits.values() for name, r in by.items() if name == "politeness") == 500
