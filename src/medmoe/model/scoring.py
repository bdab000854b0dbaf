"""Anomaly scoring (paper §3.5)."""

from __future__ import annotations

import torch

from medmoe.model.losses import discounted_error


def to_model_range(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Map images in [0, 1] linearly onto the model's ``value_range`` (any shape)."""
    low, high = value_range
    return low + (high - low) * x


def to_image_range(z: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Inverse of :func:`to_model_range`: model-range values back to the [0, 1] image range."""
    low, high = value_range
    return (z - low) / (high - low)


def anomaly_map(x: torch.Tensor, x_hat: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """The first term of Eq. 5, ``(x − x_hat)² · exp(−u²)``, averaged over channels.

    Without ``u`` (the ablation) it is the squared reconstruction error.

    Shapes: ``x, x_hat, u (B, C, H, W)`` → ``(B, 1, H, W)``.
    """
    return discounted_error((x - x_hat).square(), u).mean(dim=1, keepdim=True)


def image_score(amap: torch.Tensor) -> torch.Tensor:
    """The image anomaly score: the mean of the anomaly map. ``(B, 1, H, W)`` → ``(B,)``."""
    return amap.flatten(1).mean(dim=1)
