"""Reward serving: the reward actor scores (prompt, response) pairs with a trained
multi-label reward model (`mogrpo.reward_model`) and combines the labels into one reward
(`mogrpo.reward_aggregate`). Training the model is `reward_training`."""
