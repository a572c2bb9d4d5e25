"""rollout role."""
