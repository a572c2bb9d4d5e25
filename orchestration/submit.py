"""Submit a run to a Ray cluster as a Ray job: the repository is uploaded as the job's
working directory (without `.venv`, `runs/`, `.git` and caches), every path the config
names is checked first to be one the cluster can see, then `python -m orchestration.train`
starts on the cluster and its logs are followed here.

    make submit CONFIG=cluster_configs/multi_gpu.yaml ADDRESS=http://HEAD:8265 ARGS='run_name=x output_dir=/mnt/runs'
    python -m orchestration.submit --config ... --address http://HEAD:8265 [--no-wait] [key=value ...]

A path is one the cluster can see when it is inside the uploaded repository (and not in an
excluded folder) or absolute (storage every node mounts; not checked from here). Built-in
model names and Hugging Face ids are resolved on the cluster. The run folder must be on
such storage: a relative `output_dir` would be written into the job's temporary working
directory and deleted with it. With token authentication (`RAY_AUTH_MODE=token`) the token
is read from `RAY_AUTH_TOKEN` or Ray's token file, as by `ray job submit`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from mogrpo.config import RunConfig, load_config
from mogrpo.errors import UserError, report
from mogrpo.models import BUILTIN_MODELS, looks_like_hub_id
from mogrpo.prompts import is_file_ref

REPO = Path(__file__).resolve().parents[1]
UPLOAD_EXCLUDES = [".venv/", "runs/", ".git/", "**/__pycache__/", ".pytest_cache/", "*.egg-info/"]
AGENT_WAIT_S = 120  # how long to retry while a fresh head's job agent comes up
JOB_ENV = {"PYTHONUNBUFFERED": "1"}  # no key the driver sets itself: Ray refuses to merge a conflict


class SubmitError(UserError):
    """The run cannot be submitted as configured; the message says what to set."""


def check_cluster_paths(cfg: RunConfig, config_file: Path) -> list[str]:
    """Raise `SubmitError` for a path the cluster cannot see; returns notes on absolute paths
    (assumed to be on storage every node mounts)."""
    notes, problems = [], []
    # (key, path, whether it names something on disk: the rules resolve_model and the prompt reader apply)
    model = cfg.model.path
    refs = [("model.path", model, model not in BUILTIN_MODELS and ((REPO / model).exists() or not looks_like_hub_id(model))),
            ("reward.model", cfg.reward.model, True)]  # always a folder
    sources = [(f"data.sources[{i}]", s) for i, s in enumerate(cfg.data.sources) if not s.fallback]
    sources += [(f"eval.sources[{i}]", s) for i, s in enumerate(cfg.eval.sources)] if cfg.eval.every else []
    refs += [(f"{key}.path", s.path, is_file_ref(s.path, REPO)) for key, s in sources]
    for name, ref, local in refs:
        if not local:
            continue  # resolved on the cluster: a built-in model, a Hugging Face model or data set id
        path = Path(ref).expanduser()
        if path.is_absolute():
            notes.append(f"{name}: {ref} (absolute: must exist on every node)")
            continue
        where = (REPO / path).resolve()
        if not where.is_relative_to(REPO):
            problems.append(f"{name} {ref!r} lies outside the uploaded repository {REPO}: the cluster cannot see it; "
                            f"put it on storage every node mounts and give its absolute path")
        elif any(where.is_relative_to(REPO / ex.rstrip("/")) for ex in UPLOAD_EXCLUDES if "*" not in ex):
            problems.append(f"{name} {ref!r} is in a folder that is not uploaded ({', '.join(UPLOAD_EXCLUDES[:3])}); "
                            f"give an absolute path on storage every node mounts")
        elif not where.exists():
            problems.append(f"{name} {ref!r} does not exist under {REPO}")
    if not Path(cfg.output_dir).is_absolute():
        problems.append(f"output_dir {cfg.output_dir!r} is relative: the run folder would be written into the job's "
                        f"temporary working directory and deleted with it; set output_dir=/path/on/shared/storage")
    if not config_file.resolve().is_relative_to(REPO):
        problems.append(f"--config {config_file} is outside the uploaded repository {REPO}; copy it into cluster_configs/")
    if problems:
        raise SubmitError("cannot submit: " + "; ".join(problems))
    return notes


def entrypoint(config_file: Path, overrides: list[str]) -> str:
    config = config_file.resolve().relative_to(REPO)
    return shlex.join(["python", "-m", "orchestration.train", "--config", str(config), *overrides])


def submit(address: str, config_file: Path, overrides: list[str], wait: bool = True, timeout_s: float | None = None) -> str:
    """Submit the run; with `wait`, follow its logs until it ends. Returns the job's final
    status (or "SUBMITTED" without `wait`)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cfg = load_config(config_file, overrides)
    for note in check_cluster_paths(cfg, config_file):
        print(f"note: {note}", flush=True)
    client = JobSubmissionClient(address)
    job = dict(entrypoint=entrypoint(config_file, overrides),
               submission_id=f"mogrpo-{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}",
               runtime_env={"working_dir": str(REPO), "excludes": UPLOAD_EXCLUDES, "env_vars": JOB_ENV},
               metadata={"run_name": cfg.run_name, "run_dir": str(cfg.run_dir)})
    for attempt in range(AGENT_WAIT_S // 5 + 1):
        try:
            job_id = client.submit_job(**job)
            break
        except RuntimeError as err:  # a head that has just started may not have its job agent yet
            if "No available agent" not in str(err) or attempt == AGENT_WAIT_S // 5:
                raise
            time.sleep(5)
    print(f"submitted {job_id} to {address}; run folder {cfg.run_dir}", flush=True)
    if not wait:
        print(f"follow it with: ray job logs --address {address} --follow {job_id}")
        return "SUBMITTED"
    shown, deadline = 0, None if timeout_s is None else time.monotonic() + timeout_s
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    try:
        while True:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
            print(logs[shown:], end="", flush=True)
            shown = len(logs)
            if status in terminal:
                break
            if deadline is not None and time.monotonic() > deadline:
                client.stop_job(job_id)
                raise SubmitError(f"job {job_id} did not finish within {timeout_s:.0f}s; stopped it")
            time.sleep(2)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running (ray job stop --address {address} {job_id})")
        return "RUNNING"
    print(f"job {job_id}: {status.value}", flush=True)
    return status.value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML run config inside this repository")
    parser.add_argument("--address", default="http://127.0.0.1:8265",
                        help="the cluster's dashboard address (default: a head on this machine)")
    parser.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    parser.add_argument("--timeout", type=float, default=None, help="stop the job after this many seconds")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. output_dir=/mnt/runs run_name=x")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    args = parser.parse_args(argv)
    try:
        status = submit(args.address, Path(args.config), args.overrides, not args.no_wait, args.timeout)
    except UserError as err:
        return report(err, args.debug)
    return 0 if status in ("SUCCEEDED", "SUBMITTED", "RUNNING") else 1


if __name__ == "__main__":
    sys.exit(main())
