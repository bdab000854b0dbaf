"""The task-specific prompt encoder ``g`` (paper §3.2), minus its frozen text model.

The frozen text encoder (:mod:`medmoe.text`) turns a prompt into an embedding once; this module
holds only the trainable FC that condenses it, so training and inference never run the text model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medmoe.model.config import ModelConfig


def nearest_task(text_embedding: torch.Tensor, task_prompts: torch.Tensor) -> torch.Tensor:
    """Index ``(B,)`` of the task prompt embedding ``(T, D)`` nearest (cosine) to each ``(B, D)`` embedding: the
    one rule by which a network picks a task from a prompt (the torch-free
    :class:`medmoe.api.prompt_matching.PromptMatcher` reports the same argmax with its similarity)."""
    return (F.normalize(text_embedding, dim=1) @ F.normalize(task_prompts, dim=1).T).argmax(dim=1)


class PromptEncoder(nn.Module):
    """Trainable FC on a frozen text embedding: ``e (B, text_dim)`` → ``tau (B, prompt_dim)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.text_dim, config.prompt_dim)

    def forward(self, text_embedding: torch.Tensor) -> torch.Tensor:
        """``(B, text_dim)`` → ``(B, prompt_dim)``."""
        return self.fc(text_embedding)
