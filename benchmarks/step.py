"""A synchronous GRPO step against what this machine can physically do, and the memory of
every process of the run, in one run (issue "within 1.3x of what this CPU can do"):

The work: SmolLM2-135M-Instruct, 8 prompts x 4 responses x <= 64 new tokens from
`harmful_train.json` and `harmless_train.json`, KL coefficient 0.04, one optimizer step per
batch, `learner.micro_batch_tokens: 2048`, ZeRO-2, `rollout.max_staleness: 0`
(cpu_smoke.yaml plus those overrides).

1. Probes, in this process with the run's thread count: GEMM throughput on the model's
   weight shapes (float32, and bfloat16 where this CPU computes in it natively) and copy
   bandwidth (bytes read + written per second over a 512 MiB buffer).
2. The step: a real training run (`python -m orchestration.train`), medians over the steps
   after `--warmup`: `step/time_s` and per-phase times (generate, reward, learner reference
   pass, forward, backward, optimizer, sync; the learner's phases from its own clock).
3. Floors (benchmarks/roofline.py) from the run's token counts: `step/floor/<phase>_s`,
   `step/limit_s` (their sum: a synchronous step does them one after another) and
   `step/over_limit` = time / limit; `step/ratio/<phase>` per phase.
4. Memory: every 0.5 s, the resident memory of every process the run started, by role
   (driver, rollout, learner, reward, ray: raylet, GCS and idle workers; pages shared
   between processes counted once, as `shared`: see MemorySampler); `step/peak_memory_gib`
   is the peak of the sum, `step/memory_gib/<role>` each role's share at that moment, and
   `step/machine_used_gib` the peak rise of the machine's used memory (total - available)
   over its level before the run, which counts everything, Ray's object store included.

    .venv/bin/python -m benchmarks.step [--steps 6] [--warmup 2] [key=value ...]   (also part of `make bench`)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.results import merge_results, print_table
from benchmarks.roofline import DecoderShape, StepWork, phase_floors
from orchestration import report

OUT = Path("runs/bench/step")
WORK = ["rollout.prompts_per_step=8", "rollout.group_size=4", "rollout.max_new_tokens=64", "learner.loss.kl_coef=0.04",
        "learner.micro_batch_tokens=2048", "learner.zero_stage=2", "rollout.max_staleness=0", "checkpoint.every=0",
        "checkpoint.resume=false", "logging.log_rollouts=false"]
ROLES = {"RolloutWorker": "rollout", "LearnerWorker": "learner", "RewardActor": "reward"}
PHASES = {"generate": "time/generate", "reward": "time/reward", "reference": "time/learner_ref",
          "forward": "time/learner_forward", "backward": "time/learner_backward",
          "optimizer": "time/learner_optimizer", "sync": "time/sync"}


# ---------------------------------------------------------------------- probes
def gemm_rate(shape: DecoderShape, dtype, rows: int = 512, repeats: int = 5) -> float:
    """FLOP/s of `rows` x (in -> out) products over the model's weight shapes, each shape
    weighted by how often a token passes it (the mix of a forward); medians of `repeats`."""
    import torch

    seconds = 0.0
    for k, n, times in shape.matmuls():
        x, w = torch.randn(rows, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.matmul(x, w)  # warm-up
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(x, w)
            runs.append(time.perf_counter() - t0)
        seconds += times * statistics.median(runs)
    return sum(2 * rows * k * n * c for k, n, c in shape.matmuls()) / seconds


def copy_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes read plus bytes written per second by a large tensor copy (median of repeats)."""
    import torch

    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times)


def probes(shape: DecoderShape, threads: int) -> dict[str, float]:
    import torch

    from mogrpo.hardware import cpu_has_fast_bf16

    torch.set_num_threads(threads)
    rates = {"float32": gemm_rate(shape, torch.float32)}
    if cpu_has_fast_bf16():
        rates["bfloat16"] = gemm_rate(shape, torch.bfloat16)
    fastest = torch.bfloat16 if "bfloat16" in rates else torch.float32
    # a decode step multiplies only the sequences in flight (32 here): how far that falls short
    decode = gemm_rate(shape, fastest, rows=32)
    return {**{f"step/gemm_gflops/{k}": v / 1e9 for k, v in rates.items()},
            "step/gemm_gflops/decode_32_rows": decode / 1e9, "step/copy_gb_per_s": copy_bandwidth() / 1e9}


# ---------------------------------------------------------------------- memory
class MemorySampler(threading.Thread):
    """Memory of a process and its descendants by role, every `period` seconds (module docstring).

    Per process, its anonymous resident memory (RSS minus the file-backed pages it shares:
    libraries, mapped model files), summed by role; the shared pages are counted once (the
    largest of any process) under `shared`. Read from /proc/<pid>/statm, which costs next to
    nothing; PSS (smaps) would be exact, but reading it walks every page table of a
    multi-GiB process under its memory lock, twice a second, beside the run it measures."""

    def __init__(self, root_pid: int, period: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.root, self.period, self.stop = psutil.Process(root_pid), period, threading.Event()
        self.baseline = self.machine_used()
        self.peak_total, self.at_peak, self.peak_used = 0, {}, 0

    @staticmethod
    def machine_used() -> int:
        import psutil

        memory = psutil.virtual_memory()
        return memory.total - memory.available

    def role(self, proc) -> str:
        for p in [proc, *proc.parents()]:
            cmd = " ".join(p.cmdline())
            for name, role in ROLES.items():
                if f"ray::{name}" in cmd:
                    return role
            if p.pid == self.root.pid:
                return "driver" if p is proc else "ray"
        return "ray"

    def sample(self) -> None:
        import psutil

        by_role: dict[str, int] = {"shared": 0}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                info, role = proc.memory_info(), self.role(proc)
                by_role[role] = by_role.get(role, 0) + info.rss - info.shared
                by_role["shared"] = max(by_role["shared"], info.shared)
            except psutil.Error:
                pass
        total = sum(by_role.values())
        if total > self.peak_total:
            self.peak_total, self.at_peak = total, by_role
        self.peak_used = max(self.peak_used, self.machine_used() - self.baseline)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample()
            except Exception:  # the run's processes come and go; a missed sample is fine
                pass
            self.stop.wait(self.period)


# ---------------------------------------------------------------------- the step
def run_step(steps: int, extra: list[str], memory_period: float = 0.5) -> tuple[list[dict], MemorySampler]:
    cmd = [sys.executable, "-m", "orchestration.train", "--config", "cluster_configs/cpu_smoke.yaml",
           f"output_dir={OUT}", "run_name=step", f"steps={steps}", *WORK, *extra]
    proc = subprocess.Popen(cmd)
    sampler = MemorySampler(proc.pid, memory_period)
    if memory_period > 0:
        sampler.start()
    rc = proc.wait()
    sampler.stop.set()
    if memory_period > 0:
        sampler.join()
    if rc != 0:
        raise SystemExit(f"the step benchmark's training run failed (exit {rc}): {' '.join(cmd)}")
    return [r for r in report.read_metrics(OUT / "step") if r["step"] >= 1], sampler


def model_shape() -> DecoderShape:
    """SmolLM2-135M's shapes and parameter count, from its config and safetensors headers."""
    import math

    from safetensors import safe_open

    from mogrpo.models import resolve_model

    folder = resolve_model("smollm2-135m-instruct")
    parameters = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            parameters += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return DecoderShape.from_hf_config(json.loads((folder / "config.json").read_text()), parameters)


def summarise(records: list[dict], warmup: int, shape: DecoderShape, rates: dict[str, float],
              sampler: MemorySampler, dtype: str) -> dict:
    from mogrpo.config import load_config

    run = load_config(OUT / "step" / "config.yaml")  # the run's resolved config: its overrides included
    steady = records[warmup:] or records
    med = lambda key: float(statistics.median(r.get(key, 0.0) for r in steady))  # noqa: E731
    r = run.rollout
    work = StepWork(sequences=r.prompts_per_step * r.group_size, groups=r.prompts_per_step,
                    prompt_tokens=round(med("tokens/prompt")), response_tokens=round(med("tokens/response")),
                    max_new_tokens=r.max_new_tokens)
    gemm = {dtype: rates[f"step/gemm_gflops/{dtype}"] * 1e9 for dtype in ("float32", "bfloat16")
            if f"step/gemm_gflops/{dtype}" in rates}
    floors = phase_floors(shape, work, gemm, rates["step/copy_gb_per_s"] * 1e9, generate_dtype=dtype,
                          train_dtype=dtype, reference=run.learner.loss.kl_coef > 0)
    times = {phase: med(key) for phase, key in PHASES.items()}
    times["forward_backward"] = times["forward"] + times["backward"]
    out = {"step/time_s": med("time/step"), "step/limit_s": sum(floors.values()), "step/dtype": dtype,
           "step/tokens/prompt": work.prompt_tokens, "step/tokens/response": work.response_tokens,
           "step/tokens/trained_padded": med("tokens/trained_padded"),
           **{f"step/phase/{k}_s": v for k, v in times.items()},
           **{f"step/floor/{k}_s": v for k, v in floors.items()}}
    out["step/over_limit"] = out["step/time_s"] / out["step/limit_s"]
    for phase in floors:
        if times.get(phase) and floors[phase] > 0:
            out[f"step/ratio/{phase}"] = times[phase] / floors[phase]
    # scoring is streamed, so most of it runs inside `generate`; it is left out of the sum
    out["step/other_s"] = out["step/time_s"] - sum(times[k] for k in PHASES if k != "reward")
    out["step/peak_memory_gib"] = sampler.peak_total / 2**30
    out.update({f"step/memory_gib/{role}": b / 2**30 for role, b in sorted(sampler.at_peak.items())})
    out["step/machine_used_gib"] = sampler.peak_used / 2**30
    return out


def main(argv: list[str] | None = None) -> dict:
    from mogrpo.hardware import local_dtype

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--memory-period", type=float, default=0.5, help="seconds between memory samples (0: none)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for the run")
    args = parser.parse_args(argv)
    shape = model_shape()
    dtype = local_dtype("auto")
    rates = probes(shape, threads=int(os.environ.get("MOGRPO_BENCH_THREADS", "2")))
    records, sampler = run_step(args.steps, args.overrides, args.memory_period)
    results = {**rates, **summarise(records, args.warmup, shape, rates, sampler, dtype)}
    merge_results(results)
    print_table("GRPO step against this machine's floor (runs/bench/results.json)", results)
    return results


if __name__ == "__main__":
    main()
