"""`make submit`: paths a cluster cannot see fail before anything is submitted, and a tiny
job submitted to a private Ray head (token auth, its own temp dir and ports) succeeds."""

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from mogrpo.config import load_config
from mogrpo.runtime import free_port
from orchestration.submit import SubmitError, check_cluster_paths, entrypoint
from tests.helpers import tiny_run_overrides

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "cluster_configs" / "cpu_smoke.yaml"


def test_paths_the_cluster_cannot_see_are_named():
    cfg = load_config(SMOKE, ["eval.every=5"])
    with pytest.raises(SubmitError) as err:
        check_cluster_paths(cfg, SMOKE)
    msg = str(err.value)
    assert "data.sources[0].path '../shared/data/harmbench_advbench/refusal_direction/harmful_train.json' lies " \
           "outside the uploaded repository" in msg
    assert "eval.sources[1].path" in msg
    assert "reward.model 'runs/reward-model' is in a folder that is not uploaded" in msg
    assert "output_dir 'runs' is relative" in msg and "set output_dir=/path/on/shared/storage" in msg
    assert "model.path" not in msg  # a built-in: resolved on the cluster

    ok = load_config(SMOKE, ["output_dir=/mnt/runs", "reward.model=/mnt/rm",
                             "data.sources=[{path: cluster_configs/prompts/smoke_prompts.jsonl}]"])
    assert check_cluster_paths(ok, SMOKE) == ["reward.model: /mnt/rm (absolute: must exist on every node)"]
    assert entrypoint(SMOKE, ["steps=2", "data.sources=[{path: x}]"]) == (
        "python -m orchestration.train --config cluster_configs/cpu_smoke.yaml steps=2 'data.sources=[{path: x}]'")


@pytest.fixture
def ray_head():
    """A Ray head of its own (token auth, temp dir, ports), stopped by ending its processes, never `ray stop`."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), PATH=f"{bin_dir}:{env['PATH']}")
    # every port its own: the tests' session instance already holds Ray's defaults (e.g. the agent's 52365)
    ports = {name: free_port() for name in ("port", "dashboard-port", "dashboard-agent-listen-port",
                                            "dashboard-agent-grpc-port", "metrics-export-port",
                                            "runtime-env-agent-port", "ray-client-server-port",
                                            "node-manager-port", "object-manager-port")}
    dashboard = ports["dashboard-port"]
    temp = tempfile.mkdtemp(prefix="mgr-head-", dir="/tmp")  # short: Ray's socket paths are length-limited
    head = subprocess.Popen([str(bin_dir / "ray"), "start", "--head", "--block",
                             *(f"--{name}={p}" for name, p in ports.items()),
                             "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                             "--num-cpus=4", f"--temp-dir={temp}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without the token: the server is up
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "the Ray head did not come up"
                time.sleep(1)
        yield address, env
    finally:
        procs = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)] if head.poll() is None else []
        head.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            p.kill()


@pytest.mark.slow
def test_tiny_job_submitted_to_a_private_head_succeeds(ray_head, tmp_path, quick_reward_model):
    address, env = ray_head
    overrides = tiny_run_overrides(tmp_path, quick_reward_model, steps=2) + [
        "run_name=submitted", "data.sources=[{path: cluster_configs/prompts/smoke_prompts.jsonl, prompt_field: prompt}]"]
    done = subprocess.run([sys.executable, "-m", "orchestration.submit", "--config", "cluster_configs/cpu_smoke.yaml",
                           "--address", address, "--timeout", "600", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "SUCCEEDED" in done.stdout and "step 2/2" in done.stdout  # the job's own log, followed here
    records = [json.loads(line) for line in (tmp_path / "submitted" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert (tmp_path / "submitted" / "final" / "config.json").is_file()
