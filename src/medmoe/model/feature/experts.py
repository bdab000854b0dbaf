"""The feature network's trainable parts: the shared encoder and the bank of hallucination-aware expert decoders."""

from __future__ import annotations

import torch
from torch import nn


class FeatureEncoder(nn.Module):
    """Shared encoder: ``z (B, D, h, w)`` → bottleneck ``b (B, E, h/2, w/2)`` and ``v (B, latent)``."""

    def __init__(self, in_channels: int, width: int, latent_dim: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, latent_dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.conv(z)
        return self.dropout(b), self.fc(b.mean(dim=(2, 3)))


class FeatureExpertBank(nn.Module):
    """N feature decoders as grouped convolutions: ``b (B, E, h/2, w/2)`` → ``(B, N, D + 1, h, w)``.

    Each expert: 4×4 stride-2 transposed conv ``E → W`` (BN, GELU), 3×3 conv ``W → W`` (BN, GELU),
    1×1 conv ``W → D + 1`` (``mu``, then ``sigma``). ``groups=N`` with per-channel batch norm makes it
    exactly N separate decoders.
    """

    def __init__(self, num_experts: int, in_width: int, width: int, out_channels: int,
                 hallucination: bool) -> None:
        super().__init__()
        n = num_experts
        self.num_experts = n
        self.out_channels = out_channels + (1 if hallucination else 0)
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(n * in_width, n * width, 4, stride=2, padding=1, groups=n, bias=False),
            nn.BatchNorm2d(n * width), nn.GELU(),
            nn.Conv2d(n * width, n * width, 3, padding=1, groups=n, bias=False),
            nn.BatchNorm2d(n * width), nn.GELU(),
            nn.Conv2d(n * width, n * self.out_channels, 1, groups=n),
        )

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        out = self.layers(b.repeat(1, self.num_experts, 1, 1))
        return out.unflatten(1, (self.num_experts, self.out_channels))

    def mix(self, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_k s_k expert_k(b)``: ``(B, D + 1, h, w)`` (or ``(B, D, h, w)`` without ``sigma``)."""
        return torch.einsum("bn,bnchw->bchw", weights, self(b))
