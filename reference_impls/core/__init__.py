"""Shared machinery of the reference implementations: models, log-probs, losses, sampling, training."""
