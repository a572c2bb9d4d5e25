"""The multi-label reward model: training (`python -m reward_service.train`), held-out
evaluation (`python -m reward_service.evaluate`), and serving as a batched Ray actor
(`reward_service.actor.RewardActor`).

    from reward_service import load_reward_model
    rm = load_reward_model("runs/reward-model")
    rm.labels                              # ['safety', 'actionability', 'meaningfulness', 'politeness']
    rm.score(prompts, responses)           # {label: np.ndarray of floats in [0, 1]}
"""

from reward_service.model import RewardModel, RewardModelError, load_reward_model, read_labels

__all__ = ["RewardModel", "RewardModelError", "load_reward_model", "read_labels"]
