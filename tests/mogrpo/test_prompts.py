"""Prompt data: every file format, the chat template, over-long prompts counted and
skipped (never truncated), empty and missing data as clear errors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from mogrpo.config.sections import DataConfig, PromptSource
from mogrpo.models import resolve_model
from mogrpo.prompts import PromptDataError, PromptSampler, load_prompts


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


ROWS = [{"q": "What is two plus two?"}, {"q": "Name a colour."}, {"q": "word " * 400}, {"q": "  "}]


def write(tmp_path, fmt):
    path = tmp_path / f"prompts.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "csv":
        path.write_text("q\n" + "".join(f'"{r["q"]}"\n' for r in ROWS))
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_formats_template_and_length_filter(tmp_path, tokenizer, fmt):
    path = write(tmp_path, fmt)
    data = DataConfig(sources=[PromptSource(path=str(path), prompt_field="q")], max_prompt_tokens=64, shuffle=False)
    prompts, report = load_prompts(data, tokenizer, seed=0)
    # 4 rows: two usable, one of ~400 words (too long), one blank (csv may read it as empty)
    assert [p.text for p in prompts] == ["What is two plus two?", "Name a colour."]
    stats = report.sources[str(path)]
    assert stats["too_long"] == 1 and stats["used"] == 2
    text = tokenizer.decode(prompts[0].token_ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert all(len(p.token_ids) <= 64 for p in prompts)


def test_json_objects_of_rows_or_columns(tmp_path, tokenizer):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"train": [{"q": "Name a colour."}, {"q": "Name a fruit."}]}))
    columns = tmp_path / "columns.json"  # Safety-Tuned LLaMAs' shape: one list per field, "inputs" empty
    columns.write_text(json.dumps({"instructions": ["Explain why you should wash your hands.", "Name a bird."],
                                   "inputs": [], "ids": [7, 8]}))
    data = DataConfig(sources=[PromptSource(path=str(rows), prompt_field="q"),
                               PromptSource(path=str(columns), prompt_field="instructions")], shuffle=False)
    prompts, _ = load_prompts(data, tokenizer, seed=0)
    assert [p.text for p in prompts] == ["Name a colour.", "Name a fruit.",
                                         "Explain why you should wash your hands.", "Name a bird."]
    uneven = tmp_path / "uneven.json"
    uneven.write_text(json.dumps({"instructions": ["a", "b"], "inputs": ["x"]}))
    with pytest.raises(PromptDataError, match=r"uneven\.json: .*columns of one length \(got \{'instructions': 2, 'inputs': 1\}\)"):
        load_prompts(DataConfig(sources=[PromptSource(path=str(uneven), prompt_field="instructions")]), tokenizer, seed=0)


def test_chat_messages_and_system_prompt(tmp_path, tokenizer):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi there"}]}) + "\n")
    data = DataConfig(sources=[PromptSource(path=str(path), prompt_field="messages")], system_prompt="Be brief.")
    prompts, _ = load_prompts(data, tokenizer, seed=0)
    assert prompts[0].text == "Hi there"
    assert "Be brief." in tokenizer.decode(prompts[0].token_ids)


def test_everything_too_long_is_an_error(tmp_path, tokenizer):
    path = write(tmp_path, "jsonl")
    data = DataConfig(sources=[PromptSource(path=str(path), prompt_field="q")], max_prompt_tokens=8)
    with pytest.raises(PromptDataError, match="no usable prompts.*4 too long|no usable prompts"):
        load_prompts(data, tokenizer, seed=0)


def test_empty_file_is_an_error(tmp_path, tokenizer):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(PromptDataError, match="no usable prompts"):
        load_prompts(DataConfig(sources=[PromptSource(path=str(path))]), tokenizer, seed=0)


def test_missing_required_file_names_it(tmp_path, tokenizer):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(PromptDataError, match="nope.jsonl"):
        load_prompts(DataConfig(sources=[PromptSource(path=str(missing))]), tokenizer, seed=0)


def test_wrong_field_lists_the_fields(tmp_path, tokenizer):
    path = write(tmp_path, "jsonl")
    with pytest.raises(PromptDataError, match=r"no field 'prompt' \(fields: \['q'\]\)"):
        load_prompts(DataConfig(sources=[PromptSource(path=str(path))]), tokenizer, seed=0)


def test_fallback_only_when_nothing_else_reads(tmp_path, tokenizer):
    real = write(tmp_path, "jsonl")
    fallback = tmp_path / "fallback.jsonl"
    fallback.write_text(json.dumps({"q": "fallback prompt"}) + "\n")
    sources = [PromptSource(path=str(tmp_path / "absent.jsonl"), prompt_field="q", required=False),
               PromptSource(path=str(fallback), prompt_field="q", fallback=True)]
    prompts, report = load_prompts(DataConfig(sources=sources), tokenizer, seed=0)
    assert [p.text for p in prompts] == ["fallback prompt"]
    assert "skipped" in report.sources[str(tmp_path / "absent.jsonl")]

    sources[0] = PromptSource(path=str(real), prompt_field="q", required=False)
    prompts, _ = load_prompts(DataConfig(sources=sources, max_prompt_tokens=64), tokenizer, seed=0)
    assert "fallback prompt" not in {p.text for p in prompts}


def test_real_shared_data(shared_data, tokenizer):
    sources = [PromptSource(path=str(shared_data / "xstest/xstest_prompts.csv"), prompt_field="prompt", limit=50),
               PromptSource(path=str(shared_data / "harmbench_advbench/refusal_direction/harmful_train.json"),
                            prompt_field="instruction", limit=50)]
    prompts, report = load_prompts(DataConfig(sources=sources), tokenizer, seed=0)
    assert len(prompts) == 100 and report.total == 100
    assert len({p.prompt_id for p in prompts}) == 100


def test_sampler_is_deterministic_and_resumable(tmp_path, tokenizer):
    from mogrpo.batch import Prompt

    prompts = [Prompt(i, str(i), (i,)) for i in range(5)]
    a = PromptSampler(prompts, seed=3)
    first = [p.prompt_id for p in a.take(7)]
    assert sorted(first[:5]) == list(range(5))  # one whole epoch before any repeat
    b = PromptSampler(prompts, seed=3, position=4)
    assert [p.prompt_id for p in b.take(3)] == first[4:]


def test_sampler_without_shuffle_serves_the_data_in_order(tmp_path, tokenizer):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"q": f"question {i}"}) + "\n" for i in range(4)))
    data = DataConfig(sources=[PromptSource(path=str(path), prompt_field="q")], max_prompt_tokens=64, shuffle=False)
    prompts, _ = load_prompts(data, tokenizer, seed=0)
    sampler = PromptSampler(prompts, seed=0, shuffle=data.shuffle)
    assert [p.text for p in sampler.take(6)] == [f"question {i}" for i in (0, 1, 2, 3, 0, 1)]
    shuffled = PromptSampler(prompts, seed=0)
    assert [p.text for p in shuffled.take(4)] != [f"question {i}" for i in range(4)]


def test_relative_paths_are_taken_from_the_working_directory(tmp_path, tokenizer, monkeypatch):
    # One rule for every path in a config: prompt sources, the reward data folder, the
    # evaluation's data folder all resolve against the directory the command runs in.
    from evaluation.sets import load_eval_config
    from reward_training.dataset import resolve_data_dir

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.jsonl").write_text(json.dumps({"q": "a relative question"}) + "\n")
    monkeypatch.chdir(tmp_path)
    data = DataConfig(sources=[PromptSource(path="data/p.jsonl", prompt_field="q")], max_prompt_tokens=64)
    prompts, _ = load_prompts(data, tokenizer, seed=0)
    assert [p.text for p in prompts] == ["a relative question"]
    assert resolve_data_dir("data") == tmp_path / "data"
    assert load_eval_config(overrides=["data_dir=data"]).data_path("p.jsonl") == tmp_path / "data" / "p.jsonl"


def test_where_keeps_the_matching_rows_and_names_bad_columns(tmp_path, tokenizer):
    path = tmp_path / "mixed.jsonl"
    rows = [{"q": "Make a cake.", "request": "benign"}, {"q": "Steal a car.", "request": "harmful"},
            {"q": "Paint a fence.", "request": "benign"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = PromptSource(path=str(path), prompt_field="q", where={"request": ["benign"]}, tag="benign")
    prompts, report = load_prompts(DataConfig(sources=[src], shuffle=False), tokenizer, seed=0)
    assert [p.text for p in prompts] == ["Make a cake.", "Paint a fence."]
    assert report.sources[f"{path} where {{'request': ['benign']}}"]["used"] == 2

    with pytest.raises(PromptDataError, match=r"where names column\(s\) \['kind'\].*fields: \['q', 'request'\]"):
        load_prompts(DataConfig(sources=[src.model_copy(update={"where": {"kind": ["x"]}})]), tokenizer, seed=0)
    with pytest.raises(PromptDataError, match="no row passes where=.*'unknown'"):
        load_prompts(DataConfig(sources=[src.model_copy(update={"where": {"request": ["unknown"]}})]), tokenizer, seed=0)


def test_stratified_order_interleaves_tags_by_hand():
    import random

    from mogrpo.prompts import stratified_order

    order = stratified_order([0, 1, 2, 3, 4, 5, 6, 7], ["h", "h", "h", "h", "b", "b", "b", "b"], random.Random(0))
    assert sorted(order) == list(range(8))
    tags = ["h" if i < 4 else "b" for i in order]
    assert all(tags[i] != tags[i + 1] for i in range(7))  # equal shares alternate strictly
    assert [i for i in order if i < 4] == [0, 1, 2, 3] and [i for i in order if i >= 4] == [4, 5, 6, 7]  # each tag keeps its order


def test_stratified_sampler_keeps_every_step_near_the_overall_mix_and_resumes():
    from mogrpo.batch import Prompt

    prompts = [Prompt(i, str(i), (i,), "harmful" if i % 5 < 2 else "benign") for i in range(50)]  # 40% harmful

    def harmful_per_step(sampler, steps=25, per_step=4):  # two epochs of 4-prompt steps
        return {sum(p.tag == "harmful" for p in sampler.take(per_step)) for _ in range(steps)}

    assert harmful_per_step(PromptSampler(prompts, seed=0, stratify=True)) <= {1, 2}  # 40% of 4, +- 1
    assert harmful_per_step(PromptSampler(prompts, seed=0)) - {1, 2}  # a plain shuffle bunches a tag in some steps
    a = PromptSampler(prompts, seed=0, stratify=True)
    epoch = [p.prompt_id for p in a.take(50)]
    assert sorted(epoch) == list(range(50))  # still one whole epoch before any repeat
    assert [p.prompt_id for p in a.take(50)] != epoch  # a fresh order next epoch
    b = PromptSampler(prompts, seed=0, stratify=True, position=23)
    assert [p.prompt_id for p in b.take(5)] == epoch[23:28]
