"""The evaluation-set file and its readers: the real sets load; a set that is missing,
empty or lacks a field fails naming the file and the field."""

from __future__ import annotations

import json

import pytest

from evaluation.sets import (DEFAULT_CONFIG, EvalConfig, EvalSetError, SetConfig, limit_rows, load_eval_config,
                             load_set, read_table)
from mogrpo.config import ConfigError


def one_set(tmp_path, **set_fields) -> EvalConfig:
    cap = SetConfig(kind="benign", path="cap.jsonl", prompt_field="q", reference_field="a")
    return EvalConfig(data_dir=str(tmp_path), capability={"set": "cap"}, sets={"cap": cap, "s": SetConfig(**set_fields)})


def test_default_file_loads_every_set(shared_data):
    assert DEFAULT_CONFIG.read_text().startswith("# .venv/bin/python -m evaluation ")  # first line: the command
    cfg = load_eval_config(DEFAULT_CONFIG, [f"data_dir={shared_data}"])
    sizes = {name: len(load_set(name, cfg)) for name in cfg.sets}
    assert sizes["harmbench_test"] == 159 and sizes["jailbreakbench"] == 100 and sizes["strongreject"] == 313
    assert sizes["xstest_safe"] == 250 and sizes["xstest_unsafe"] == 200 and sizes["harmless_test"] == 200
    assert sizes["stl_malicious_instructions"] == 100 and sizes["alpaca_eval"] == 805
    rows = load_set("alpaca_eval", cfg)
    assert rows[0].id == "alpaca_eval:0" and rows[0].reference and rows[0].kind == "benign"
    assert [r.id for r in load_set("harmless_test", cfg)] == [r.id for r in load_set("harmless_test", cfg)]  # fixed


def test_missing_empty_and_wrong_field(tmp_path):
    cfg = one_set(tmp_path, kind="harmful", path="nope.csv", prompt_field="prompt")
    with pytest.raises(EvalSetError, match=r"not found: .*nope\.csv"):
        load_set("s", cfg)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EvalSetError, match=r"'s': .*empty\.jsonl holds no rows"):
        load_set("s", one_set(tmp_path, kind="harmful", path="empty.jsonl", prompt_field="prompt"))
    (tmp_path / "x.csv").write_text("goal,category\nsynthetic request one,a\n")
    with pytest.raises(EvalSetError, match=r"x\.csv has no field 'prompt' \(its prompt_field; fields: \['category', 'goal'\]\)"):
        load_set("s", one_set(tmp_path, kind="harmful", path="x.csv", prompt_field="prompt"))
    with pytest.raises(EvalSetError, match=r"no field 'kind' \(its where"):
        load_set("s", one_set(tmp_path, kind="harmful", path="x.csv", prompt_field="goal", where={"kind": ["a"]}))
    with pytest.raises(EvalSetError, match="no row of .* passes"):
        load_set("s", one_set(tmp_path, kind="harmful", path="x.csv", prompt_field="goal", where={"category": ["b"]}))
    (tmp_path / "blank.csv").write_text("goal\n\"  \"\n")
    with pytest.raises(EvalSetError, match=r"blank\.csv row 0 has no text in field 'goal'"):
        load_set("s", one_set(tmp_path, kind="harmful", path="blank.csv", prompt_field="goal"))


def test_json_columns_and_sample(tmp_path):
    (tmp_path / "cols.json").write_text(json.dumps({"instructions": [f"synthetic {i}" for i in range(20)],
                                                    "inputs": []}))
    rows = read_table(tmp_path / "cols.json")
    assert len(rows) == 20 and rows[3] == {"instructions": "synthetic 3"}
    sampled = load_set("s", one_set(tmp_path, kind="benign", path="cols.json", prompt_field="instructions", sample=5))
    assert len(sampled) == 5
    assert limit_rows(sampled, 2, 0) == limit_rows(sampled, 2, 0) and len(limit_rows(sampled, 2, 0)) == 2
    three = {r.id for r in limit_rows(sampled, 3, 0)}
    assert {r.id for r in limit_rows(sampled, 2, 0)} <= three  # nested: a larger --limit keeps the smaller one's rows


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "sets.yaml"
    f.write_text("sets:\n  a: {kind: harmful, path: x.csv, prompt_feld: p}\n")
    with pytest.raises(ConfigError, match=r"sets\.a\.prompt_feld: unknown key"):
        load_eval_config(f)
    f.write_text("sets:\n  a: {kind: bad, path: x.csv, prompt_field: p}\n")
    with pytest.raises(ConfigError, match=r"sets\.a\.kind"):
        load_eval_config(f)
    f.write_text("sets:\n  a: {kind: harmful, path: x.csv, prompt_field: p}\n")
    with pytest.raises(ConfigError, match="capability.set 'alpaca_eval' must name a set with a reference_field"):
        load_eval_config(f)
