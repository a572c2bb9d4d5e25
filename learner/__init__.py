"""learner role."""
