"""Placement is a pure function of the config."""

import pytest

from mogrpo.config import load_config
from orchestration.placement import PlacementError, check_fits, plan_placement


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


def test_custom_resources_pin_roles():
    cfg = load_config(None, ["learner.resources={mogrpo_learner: 1}", "rollout.resources={mogrpo_rollout: 1}"])
    p = plan_placement(cfg)
    assert p.bundles[p.learner[0]] == {"CPU": 1, "mogrpo_learner": 1}
    assert p.bundles[p.rollout[0]] == {"CPU": 1, "mogrpo_rollout": 1}
    assert p.names() == ["learner-0", "rollout-0", "reward-0"]


def test_check_fits_names_what_is_missing():
    cfg = load_config(None, ["learner.num_workers=2", "learner.num_gpus=1", "learner.num_cpus=4",
                             "rollout.num_workers=2", "rollout.num_gpus=1", "rollout.num_cpus=4",
                             "rollout.prompts_per_step=4", "reward.num_cpus=2"])
    p = plan_placement(cfg)
    two_nodes = [{"CPU": 8, "GPU": 2}, {"CPU": 10, "GPU": 2}]
    check_fits(p, two_nodes)
    with pytest.raises(PlacementError, match=r"needs CPU 18 \(the cluster has 16\), GPU 4 \(the cluster has 2\) "
                                             r"for its 5 actors; node 0: \{CPU: 16, GPU: 2\}"):
        check_fits(p, [{"CPU": 16, "GPU": 2}])
    # enough in total, but no node keeps 4 CPUs + 1 GPU free for the last GPU actor
    with pytest.raises(PlacementError, match=r"-\d needs \{CPU: 4, GPU: 1\} on one node"):
        check_fits(p, [{"CPU": 6, "GPU": 2}, {"CPU": 12, "GPU": 2}])
    with pytest.raises(PlacementError, match="STRICT_PACK puts every actor on one node"):
        check_fits(plan_placement(cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
            update={"placement_strategy": "STRICT_PACK"})})), two_nodes)
    pinned = plan_placement(load_config(None, ["learner.resources={mogrpo_learner: 1}"]))
    with pytest.raises(PlacementError, match=r"mogrpo_learner 1 \(the cluster has 0\)"):
        check_fits(pinned, [{"CPU": 8}])
    check_fits(pinned, [{"CPU": 8}, {"CPU": 2, "mogrpo_learner": 1}])
