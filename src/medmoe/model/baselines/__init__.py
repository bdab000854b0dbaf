"""Single-task and universal baselines (AE, AE-U, MemAE) behind the same interface as the MoE.

Importing this package registers them with :func:`medmoe.model.registry.create_model`:

- ``ae`` — encoder + one plain decoder, MSE (set ``model.hallucination: false``);
- ``ae_u`` — encoder + one hallucination-aware decoder, Eq. 5 (``model.hallucination: true``);
- ``memae`` — MemAE, 25 memory items over the latent (``model.hallucination: false``);
- ``patchcore`` — PatchCore on the frozen trunk's features: per-task banks chosen by prompt
  (``model.prompt: true``) or one universal bank (``false``);
- ``feature_nn`` — per-task 1-NN on the trunk's pooled feature (``model.prompt: true``).

The AE family needs ``model.prompt: false`` (no router, no prompt). Train one per task with
``train.tasks=[<task>]`` for a single-task baseline, or on all tasks for a universal one.
"""

from medmoe.model.baselines.ae import AutoEncoder
from medmoe.model.baselines.memae import MemAE, Memory, attention_entropy, hard_shrink
from medmoe.model.baselines.patchcore import FeatureNN, PatchCore

__all__ = ["AutoEncoder", "FeatureNN", "MemAE", "Memory", "PatchCore", "attention_entropy", "hard_shrink"]
