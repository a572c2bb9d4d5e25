"""A GRPO run on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`): custom
resources stand in for the GPUs of a disaggregated layout, learner on one node, rollout on
the other. Run in its own process by test_multinode.py (a process joins one Ray cluster);
prints one JSON line with the nodes and the run folder."""

import json
import logging
import sys
from pathlib import Path

from ray.cluster_utils import Cluster

from mogrpo.config import load_config
from orchestration.train import run


def main(out_dir: str, reward_model: str, layout: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        learner_node = cluster.add_node(num_cpus=2, resources={"mogrpo_learner": 4})
        rollout_node = cluster.add_node(num_cpus=3, resources={"mogrpo_rollout": 4})
        cluster.wait_for_nodes()
        pins = {"disaggregated": ["learner.resources={mogrpo_learner: 1}", "rollout.resources={mogrpo_rollout: 1}"],
                "colocated": ["learner.resources={mogrpo_rollout: 1}", "rollout.resources={mogrpo_rollout: 1}"]}[layout]
        cfg = load_config("cluster_configs/cpu_smoke.yaml", [
            f"output_dir={out_dir}", f"run_name={layout}", "model.path=tiny-llama", "steps=2",
            "rollout.prompts_per_step=2", "rollout.group_size=3", "rollout.max_new_tokens=8", "learner.lr=1e-3",
            f"reward.model={reward_model}", "reward.fit_if_missing=false", "learner.num_cpus=1", "rollout.num_cpus=1",
            f"cluster.ray_address={cluster.address}", "cluster.actor_start_timeout_s=300", *pins])
        run(cfg)
        print(json.dumps({"learner_node": learner_node.node_id, "rollout_node": rollout_node.node_id,
                          "run_dir": str(Path(out_dir) / layout)}), flush=True)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(*sys.argv[1:4])
