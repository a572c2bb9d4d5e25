"""Process housekeeping in one place: environment for vLLM / DeepSpeed / torch on CPU or
GPU, thread counts per actor, and starting or joining Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mogrpo.models import cache_dir


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# glibc serves large allocations with fresh mmaps and unmaps them when freed, so every
# weight sync (vLLM's materialised layers, repacked GEMM weights, the 57 MB embedding)
# page-faults its memory in again; on a small VM that costs more than the wire itself.
# `heap_malloc` serves everything from the heap and keeps up to 1 GiB of freed memory.
# Not for the learner: its activations change shape every micro-batch and fragment such a
# heap (+1-2 GiB a step at 64 responses a step, until Ray's OOM killer ends the run). Nor
# may the learner get any MALLOC_* variable, not even glibc's default value: setting one
# turns off glibc's adaptive mmap threshold, and every activation is then page-faulted in
# afresh (a SmolLM2 step took 21.6 s instead of 16.0-19.1 s; README, "One step against ...").
CPU_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def worker_env(omp_threads: int, extra: dict[str, str] | None = None, *, heap_malloc: bool = False,
               passive_omp: bool = False) -> dict[str, str]:
    """Environment variables for an actor process (Ray runtime_env `env_vars`, which add to
    the job's: so the job's own should be `worker_env(n)` with neither option). On CPU,
    `heap_malloc` serves memory from a heap that keeps what is freed (`CPU_MALLOC_ENV`), and
    `passive_omp` makes idle OpenMP threads sleep rather than spin: right where actors share
    the cores at once (rollout.max_staleness > 0: spinning made a step 1.5x slower), not
    needed in a synchronous run, where the learner has the cores to itself. The driver's own
    OMP_WAIT_POLICY, if set, wins."""
    env = {
        "OMP_NUM_THREADS": str(omp_threads),
        "MKL_NUM_THREADS": str(omp_threads),
        "TOKENIZERS_PARALLELISM": "false",
        # One-process vLLM inside the actor: starts in seconds, and the weight-sync
        # engine lives in the actor's own process.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CONFIGURE_LOGGING": "1",
        # DeepSpeed compiles ops once into this folder instead of a temp dir per run.
        "TORCH_EXTENSIONS_DIR": str(cache_dir() / "torch_extensions"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "MOGRPO_CACHE": str(cache_dir()),
    }
    if not has_gpu():
        env["DS_ACCELERATOR"] = "cpu"
        if "OMP_WAIT_POLICY" in os.environ or passive_omp:
            env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        if heap_malloc:
            env.update(CPU_MALLOC_ENV)
    env.update(extra or {})
    return env


def init_ray(ray_address: str | None, *, num_cpus=None, num_gpus=None, include_dashboard=False,
             dashboard_host="127.0.0.1", object_store_memory_gib=None, runtime_env=None):
    """Join `ray_address` (or $RAY_ADDRESS, which `ray job submit` sets for its entrypoint),
    else start a private local instance that never attaches to a cluster someone else
    started on this machine. True when this call started a private instance (its owner
    stops it with `ray.shutdown()`)."""
    import ray

    if ray.is_initialized():
        return False
    ray_address = ray_address or os.environ.get("RAY_ADDRESS")
    if ray_address:
        ray.init(address=ray_address, runtime_env=runtime_env, log_to_driver=True)
        return False
    temp_dir = os.environ.get("MOGRPO_RAY_TMP") or tempfile.mkdtemp(prefix="mogrpo-ray-")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=include_dashboard,
        dashboard_host=dashboard_host,
        object_store_memory=int(object_store_memory_gib * 2**30) if object_store_memory_gib else None,
        runtime_env=runtime_env,
        _temp_dir=temp_dir,
        log_to_driver=True,
    )
    return True


# Ray's workers listen on 10002-19999 by default; ports above that and below the kernel's
# ephemeral range are only ever taken by an explicit bind.
_FIRST_PORT = 20000


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, binds to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535  # IANA's range, which macOS uses


def free_port() -> int:
    """A port nobody has bound, for a rendezvous another process binds later. Drawn outside
    the ephemeral range: a port the kernel hands out (as binding port 0 would) can be taken
    by any outgoing connection before the rendezvous binds it (EADDRINUSE in CI)."""
    import random
    import socket

    low = ephemeral_port_range()[0]
    candidates = range(_FIRST_PORT, low) if low - _FIRST_PORT >= 1000 else range(0)
    for port in random.SystemRandom().sample(candidates, min(64, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel choose
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()
