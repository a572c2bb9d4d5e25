"""reward_service role."""
