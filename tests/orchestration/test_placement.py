"""Placement is a pure function of the config."""

from mogrpo.config import load_config
from orchestration.placement import plan_placement


def test_bundles_per_role_in_order():
    cfg = load_config(None, ["learner.num_workers=2", "learner.num_gpus=1", "learner.num_cpus=4",
                             "rollout.num_workers=3", "rollout.num_gpus=0.5", "rollout.tensor_parallel_size=2",
                             "reward.num_replicas=1", "rollout.prompts_per_step=6"])
    p = plan_placement(cfg)
    assert p.learner == [0, 1] and p.rollout == [2, 3, 4] and p.reward == [5]
    assert p.bundles[0] == {"CPU": 4, "GPU": 1}
    assert p.bundles[2] == {"CPU": 1, "GPU": 1.0}  # 0.5 GPU x tensor-parallel 2
    assert p.bundles[5] == {"CPU": 1}
    assert p.totals() == {"CPU": 4 + 4 + 3 + 1, "GPU": 2 + 3.0}


def test_cpu_smoke_fits_four_logical_cpus():
    cfg = load_config("cluster_configs/cpu_smoke.yaml")
    assert plan_placement(cfg).totals()["CPU"] <= cfg.cluster.num_cpus
