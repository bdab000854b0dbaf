"""The task-specific prompt encoder ``g`` (paper §3.2), minus its frozen text model.

The frozen text encoder (:mod:`medmoe.text`) turns a prompt into an embedding once; this module
holds only the trainable FC that condenses it, so training and inference never run the text model.
"""

from __future__ import annotations

import torch
from torch import nn

from medmoe.model.config import ModelConfig


class PromptEncoder(nn.Module):
    """Trainable FC on a frozen text embedding: ``e (B, text_dim)`` → ``tau (B, prompt_dim)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.text_dim, config.prompt_dim)

    def forward(self, text_embedding: torch.Tensor) -> torch.Tensor:
        """``(B, text_dim)`` → ``(B, prompt_dim)``."""
        return self.fc(text_embedding)
