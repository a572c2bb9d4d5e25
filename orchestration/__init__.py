"""orchestration role."""
