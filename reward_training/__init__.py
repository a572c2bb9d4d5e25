"""Training the multi-label reward model offline (`python -m reward_training.train`, `make
reward`) and grading it on held-out data (`python -m reward_training.evaluate`, `make
reward-eval`). The model folder it writes is read by `mogrpo.reward_model`:

    from mogrpo.reward_model import load_reward_model
    rm = load_reward_model("runs/reward-model")
    rm.labels                              # ['safety', 'actionability', ..., 'harmful_request', 'refusal']
    rm.score(prompts, responses)           # {label: np.ndarray of floats in [0, 1]}
"""
