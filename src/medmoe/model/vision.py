"""The shared vision encoder ``f`` (paper §3.1), and the pixel family's settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medmoe.errors import ConfigError
from medmoe.model.config import ArchitectureSettings, ModelConfig


@dataclass(frozen=True)
class PixelSettings(ArchitectureSettings):
    """The convolutional encoder's and the decoders' shapes (``pixel_moe`` and the pixel baselines).

    Attributes:
        encoder_channels: output channels of the four stride-2 convolutions (the decoders mirror them).
        fc_width: width of the hidden fully connected layer in encoder and decoders.
    """

    encoder_channels: tuple[int, int, int, int] = (16, 32, 64, 64)
    fc_width: int = 2048

    def __post_init__(self) -> None:
        if len(self.encoder_channels) != 4 or min(self.encoder_channels) < 1:
            raise ConfigError(f"encoder_channels needs 4 positive entries, got {self.encoder_channels}")
        if self.fc_width < 1:
            raise ConfigError(f"fc_width must be positive, not {self.fc_width}")


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
        shape = config.settings_as(PixelSettings)
        c = (config.in_channels, *shape.encoder_channels)
        self.features = nn.Sequential(*(conv_block(c[i], c[i + 1]) for i in range(4)))
        flat = shape.encoder_channels[-1] * config.bottleneck**2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, shape.fc_width, bias=False),
            nn.BatchNorm1d(shape.fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(shape.fc_width, config.latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, R, R)`` → ``v (B, latent_dim)``."""
        return self.head(self.features(x))
