"""The end-to-end demo: RLHF on a contextual bandit with a closed-form optimum."""
