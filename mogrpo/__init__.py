"""Shared core of mogrpo: the config tree, model and prompt loading, and the records
that the roles (rollout, reward_service, learner) exchange. Imports nothing heavy."""
