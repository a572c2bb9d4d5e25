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


def test_system_prompt_is_part_of_the_policy_and_its_cache_key(tmp_path):
    from evaluation.generate import generation_header
    from evaluation.sets import GenerationConfig

    plain = check_policy("base", "tiny-llama")
    prompted = check_policy("base", "tiny-llama", "Refuse harmful requests.")
    assert plain.messages("Hi") == [{"role": "user", "content": "Hi"}]
    assert prompted.messages("Hi") == [{"role": "system", "content": "Refuse harmful requests."},
                                       {"role": "user", "content": "Hi"}]
    g = GenerationConfig()
    assert "system_prompt" not in generation_header(plain, g)  # answers cached before the option stay valid
    f = tmp_path / "base.jsonl"
    AnswerStore(f, generation_header(plain, g)).append([{"id": "a:0", "answer": "x"}])
    with pytest.raises(PolicyError, match="other weights or settings"):  # never the unprompted model's answers
        AnswerStore(f, generation_header(prompted, g)).load()

    import shutil

    from mogrpo.models import resolve_model

    no_system = tmp_path / "no-system"
    shutil.copytree(resolve_model("tiny-llama"), no_system)
    (no_system / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    check_policy("gemma-like", str(no_system))  # fine without a system prompt
    with pytest.raises(PolicyError, match=r"policy 'gemma-like' .* does not take a system prompt .*System role not"):
        check_policy("gemma-like", str(no_system), "Refuse harmful requests.")


def test_system_prompt_options_are_checked(tmp_path):
    from evaluation.run import parse_system_prompts
    from mogrpo.errors import MissingFileError

    names = ["base", "base-prompted"]
    text = tmp_path / "prompt.txt"
    text.write_text("Refuse harmful requests.\n")
    assert parse_system_prompts(["base-prompted=Be safe.", f"base=@{text}"], names) == {
        "base-prompted": "Be safe.", "base": "Refuse harmful requests."}
    with pytest.raises(PolicyError, match=r"NAME one of the --policy names \['base', 'base-prompted'\]"):
        parse_system_prompts(["trained=Be safe."], names)
    with pytest.raises(PolicyError, match="'base' is given two system prompts"):
        parse_system_prompts(["base=A", "base=B"], names)
    with pytest.raises(MissingFileError, match="no such file"):
        parse_system_prompts([f"base=@{tmp_path / 'missing.txt'}"], names)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(PolicyError, match="system prompt is empty"):
        parse_system_prompts([f"base=@{tmp_path / 'empty.txt'}"], names)
