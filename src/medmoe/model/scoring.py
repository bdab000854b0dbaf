"""Anomaly scoring (paper §3.5)."""

from __future__ import annotations

import torch


def anomaly_map(x: torch.Tensor, x_hat: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """The first term of Eq. 5, ``(x − x_hat)² · exp(−u²)``, averaged over channels.

    Without ``u`` (the ablation) it is the squared reconstruction error.

    Shapes: ``x, x_hat, u (B, C, H, W)`` → ``(B, 1, H, W)``.
    """
    err = (x - x_hat).square()
    if u is not None:
        err = err * torch.exp(-u.square())
    return err.mean(dim=1, keepdim=True)


def image_score(amap: torch.Tensor) -> torch.Tensor:
    """The image anomaly score: the mean of the anomaly map. ``(B, 1, H, W)`` → ``(B,)``."""
    return amap.flatten(1).mean(dim=1)
