"""Single-task and universal baselines (AE, AE-U, MemAE) behind the same interface as the MoE.

Importing this package registers them with :func:`medmoe.model.registry.create_model`.
"""
