"""Answers are written as they are produced: a torn last line is dropped and regenerated,
and a store of other weights or settings is never reused or overwritten."""

from __future__ import annotations

import json

import pytest

from evaluation.generate import AnswerStore, PolicyError, check_policy


def test_append_load_and_torn_line(tmp_path):
    f = tmp_path / "answers" / "p.jsonl"
    store = AnswerStore(f, {"policy": "x", "settings": {"max_tokens": 8}})
    assert store.load() == {}
    store.append([{"id": "a:0", "answer": "one"}, {"id": "a:1", "answer": "two"}])
    store.append([{"id": "a:2", "answer": "three"}])
    assert list(store.load()) == ["a:0", "a:1", "a:2"]
    with open(f, "a") as fh:
        fh.write('{"id": "a:3", "answ')  # killed in the middle of a write
    assert list(store.load()) == ["a:0", "a:1", "a:2"]
    assert f.read_text().endswith('"three"}\n')  # the torn line is gone from the file too
    store.append([{"id": "a:3", "answer": "four"}])
    assert store.load()["a:3"]["answer"] == "four"


def test_other_settings_are_an_error(tmp_path):
    f = tmp_path / "p.jsonl"
    AnswerStore(f, {"settings": {"max_tokens": 8}}).append([{"id": "a:0", "answer": "x"}])
    before = f.read_text()
    with pytest.raises(PolicyError, match="other weights or settings"):
        AnswerStore(f, {"settings": {"max_tokens": 16}}).load()
    assert f.read_text() == before and json.loads(before.splitlines()[1])["answer"] == "x"


def test_policy_that_does_not_load_is_named(tmp_path):
    with pytest.raises(PolicyError, match=r"policy 'trained' \(.*nowhere\) does not load"):
        check_policy("trained", str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(PolicyError, match=r"policy 'trained' \(.*broken\) does not load"):
        check_policy("trained", str(broken))
