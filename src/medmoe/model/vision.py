"""The shared vision encoder ``f`` (paper §3.1)."""

from __future__ import annotations

import torch
from torch import nn

from medmoe.model.config import ModelConfig


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv 4×4, stride 2, pad 1 → BatchNorm → ReLU: halves the side length."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VisionEncoder(nn.Module):
    """Four stride-2 conv blocks, then FC → ``fc_width`` (BN, ReLU) → FC → ``latent_dim``.

    Shapes: ``x (B, C, R, R)`` → ``v (B, latent_dim)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = (config.in_channels, *config.encoder_channels)
        self.features = nn.Sequential(*(conv_block(c[i], c[i + 1]) for i in range(4)))
        flat = config.encoder_channels[-1] * config.bottleneck**2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, config.fc_width, bias=False),
            nn.BatchNorm1d(config.fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(config.fc_width, config.latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, R, R)`` → ``v (B, latent_dim)``."""
        return self.head(self.features(x))
