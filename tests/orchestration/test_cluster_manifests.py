"""The Kubernetes RayJob and the cluster-launcher YAML start clusters that can hold the run
config they name: their nodes' resources pass the same pre-flight check a run does."""

import shlex
from pathlib import Path

import yaml

from mogrpo.config import load_config
from orchestration.placement import check_fits, plan_placement

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "cluster_configs" / "kubernetes"
RUN_CONFIG = REPO / "cluster_configs" / "two_nodes_16gpu.yaml"


def _quantity(cpu: str) -> float:
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _group_resources(group: dict) -> dict[str, float]:
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    out = {"CPU": _quantity(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}
    params = group.get("rayStartParams", {})
    if "num-gpus" in params:
        out["GPU"] = float(params["num-gpus"])
    if "resources" in params:
        out.update(yaml.safe_load(yaml.safe_load(params["resources"])))
    return out


def test_rayjob_cluster_holds_its_run():
    job = yaml.safe_load((MANIFESTS / "rayjob_two_nodes.yaml").read_text())
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "orchestration.train"]
    config = argv[argv.index("--config") + 1]
    assert (REPO / config) == RUN_CONFIG
    spec = job["spec"]["rayClusterSpec"]
    nodes = [_group_resources(spec["headGroupSpec"])]
    for group in spec["workerGroupSpecs"]:
        nodes += [_group_resources(group)] * group["replicas"]
    cfg = load_config(RUN_CONFIG, argv[argv.index("--config") + 2:])
    check_fits(plan_placement(cfg), nodes)
    assert {e["name"] for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]} >= {
        "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}


def test_launcher_cluster_holds_the_run():
    launcher = yaml.safe_load((MANIFESTS / "ray_cluster_launcher.yaml").read_text())
    types = launcher["available_node_types"]
    cpus = {"m6i.4xlarge": 16, "p4d.24xlarge": 96}
    nodes = [{"CPU": cpus[t["node_config"]["InstanceType"]], **t["resources"]}
             for name, t in types.items() for _ in range(t.get("min_workers", 1) if name != "head" else 1)]
    check_fits(plan_placement(load_config(RUN_CONFIG)), nodes)
    assert all("RAY_AUTH_MODE=token" in c for c in launcher["head_start_ray_commands"][1:])
    assert ".venv" in launcher["rsync_exclude"] and "runs" in launcher["rsync_exclude"]
