"""Single-task and universal baselines (AE, AE-U, MemAE) behind the same interface as the MoE.

Importing this package registers them with :func:`medmoe.model.registry.create_model`:

- ``ae`` — encoder + one plain decoder, MSE (set ``model.hallucination: false``);
- ``ae_u`` — encoder + one hallucination-aware decoder, Eq. 5 (``model.hallucination: true``);
- ``memae`` — MemAE, 25 memory items over the latent (``model.hallucination: false``).

All need ``model.prompt: false`` (they have no router and no prompt). Train one per task with
``train.tasks=[<task>]`` for a single-task baseline, or on all tasks for a universal one.
"""

from medmoe.baselines.ae import AutoEncoder
from medmoe.baselines.memae import MemAE, Memory, attention_entropy, hard_shrink

__all__ = ["AutoEncoder", "MemAE", "Memory", "attention_entropy", "hard_shrink"]
