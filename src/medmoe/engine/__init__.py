"""Training, evaluation and inference over manifests; self-describing checkpoints."""
