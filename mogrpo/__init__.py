"""Shared core of mogrpo: the config tree, model and prompt loading, and the records
that the roles (rollout, learner, reward_service, reward_training) exchange. Imports nothing heavy."""
