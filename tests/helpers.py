"""Helpers that several test modules share (tests import this module, never each other)."""

import contextlib

import torch

from mogrpo.batch import Prompt, SamplingSettings

GREEDY = SamplingSettings(group_size=1, max_new_tokens=12, temperature=0.0)
TINY = ["model.path=tiny-llama", "model.dtype=float32", "model.max_model_len=512", "learner.dtype=float32",
        "learner.omp_threads=1", "rollout.group_size=4", "rollout.max_new_tokens=16"]
"""Overrides of a run config for actors of the tiny test model started by `start_actor`."""


def long_prompt(tokenizer) -> Prompt:
    # Longer than one KV block (128 tokens on CPU): a stale prefix cache would serve the
    # old policy's keys and values for it after the update.
    text = "Here is a long note about gardens, rivers and mountains. " * 20
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    token_ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
    assert len(token_ids) > 128
    return Prompt(0, text, tuple(token_ids))


def hf_greedy(path, prompt: Prompt, n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = model.generate(torch.tensor([prompt.token_ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt.token_ids):].tolist()


def tiny_run_overrides(tmp_path, reward_model, steps):
    return [f"output_dir={tmp_path}", "run_name=e2e", "model.path=tiny-llama", f"steps={steps}",
            "rollout.prompts_per_step=2", "rollout.group_size=3", "rollout.max_new_tokens=8",
            f"reward.model={reward_model}", "reward.fit_if_missing=false", "learner.lr=1e-3",
            "checkpoint.every=1", "checkpoint.keep=1", "cluster.actor_start_timeout_s=300"]


def wandb_history(run_dir) -> list[dict]:
    """The history rows (`run.log` calls) of every offline W&B run under `run_dir/wandb`, in
    order. Reads W&B's record log: a 7-byte header, then 32 KiB blocks of chunks, each with a
    4-byte checksum, a 2-byte little-endian length and a type (1 whole, 2 first, 3 middle, 4 last)."""
    import json
    import struct
    from pathlib import Path

    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb")):
        data, pos, record = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            if (pos % 32768) + 7 > 32768:  # a block's tail too short for a chunk header is padding
                pos += 32768 - pos % 32768
                continue
            length, kind = struct.unpack_from("<HB", data, pos + 4)
            if length == 0 and kind == 0:
                break
            record += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):
                parsed = wandb_internal_pb2.Record()
                parsed.ParseFromString(record)
                if parsed.WhichOneof("record_type") == "history":
                    rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                 for item in parsed.history.item})
                record = b""
    return rows


def run_metrics(run_dir) -> dict[int, dict]:
    """A run's metrics.jsonl, by step."""
    import json
    from pathlib import Path

    return {r["step"]: r for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())}


def actor_processes(class_name: str, since: float = 0.0) -> list:
    """Processes of Ray actors of `class_name` (`ray::<class>` in the command line) started at
    or after `since` (a time.time())."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if p.info["create_time"] >= since and any(class_name in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


@contextlib.contextmanager
def killing_after_step(run_dir, step: int, processes):
    """While the block runs, a thread waits until the run has logged `step` and then kills
    `processes()` (psutil processes); yields the list of the pids it killed."""
    import threading
    import time
    from pathlib import Path

    killed: list[int] = []

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            if (Path(run_dir) / "metrics.jsonl").is_file() and step in run_metrics(run_dir):
                for p in processes():
                    killed.append(p.pid)
                    p.kill()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        watcher.join(timeout=5)
