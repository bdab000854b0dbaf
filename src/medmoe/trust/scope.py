"""What an image looks like, from the image alone: distances to each trained task's normals.

Every trained model carries a *scope head*: the frozen ImageNet trunk's feature map of the image
(:class:`~medmoe.model.trunk.FrozenTrunk`, the model's own trunk for feature models), summarised by
its spatial mean and standard deviation (:func:`descriptor`, ``2 D`` values), and per task the mean
and Ledoit–Wolf-shrunk precision of that descriptor over the task's training normals. Its output is
the squared Mahalanobis distance of an image to every task, ``(B, T)``; it is part of the network
(torch and ONNX alike), so the decisions drawn from it (:mod:`medmoe.trust.calibration`) need only
numpy.

Chosen on validation data by ``benchmarks/trust_design.py`` (``benchmarks/results/trust-design.md``):
against a 16 × 16 thumbnail and nearest-neighbour distances, this descriptor and distance identified
the task of 100 % of validation normals, flagged 96 % of natural images and 98 % of left-out tasks'
images as out of scope, at 2 % of in-scope validation normals flagged.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.trunk import FrozenTrunk, trunk_identity

SCOPE_PREFIX = "__scope__."
"""Key prefix of the scope head's tensors in ``model.safetensors``."""


def descriptor(features: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` trunk features → ``(B, 2 D)``: spatial mean and standard deviation."""
    flat = features.flatten(2)
    return torch.cat([flat.mean(dim=2), flat.std(dim=2)], dim=1)


class ScopeHead(nn.Module):
    """Squared Mahalanobis distances of image descriptors to each task's training normals.

    Args:
        mean: ``(T, F)`` per-task descriptor means.
        precision: ``(T, F, F)`` per-task inverse (shrunk) covariances.
    """

    mean: torch.Tensor
    precision: torch.Tensor

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("precision", precision.float())

    @classmethod
    def fit(cls, descriptors: list[np.ndarray]) -> ScopeHead:
        """Fit from each task's training-normal descriptors (``descriptors[t]``: ``(n_t, F)``, ``n_t ≥ 1``;
        a task with a single image gets the covariance of all tasks' images pooled)."""
        pooled = None
        means, precisions = [], []
        for rows in descriptors:
            rows = np.asarray(rows, dtype=np.float64)
            if len(rows) >= 2:
                estimate = LedoitWolf().fit(rows)
                means.append(estimate.location_)
                precisions.append(estimate.precision_)
                continue
            if pooled is None:
                pooled = LedoitWolf().fit(np.concatenate([np.asarray(r, dtype=np.float64) for r in descriptors]))
            means.append(rows[0])
            precisions.append(pooled.precision_)
        return cls(torch.from_numpy(np.stack(means)), torch.from_numpy(np.stack(precisions)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, D, h, w)`` → squared distances ``(B, T)``."""
        delta = descriptor(features)[:, None, :] - self.mean[None]  # (B, T, F)
        return torch.einsum("btf,tfg,btg->bt", delta, self.precision, delta).clamp_min(0.0)

    def extended(self, other: ScopeHead) -> ScopeHead:
        """A head with ``other``'s tasks appended after this one's (rows of this head unchanged)."""
        return ScopeHead(torch.cat([self.mean, other.mean]), torch.cat([self.precision, other.precision]))


class ScopeTrunk:
    """The trunk features the scope head reads: the model's own prepared features when the model has
    that trunk, else a frozen trunk of the model's configured variant and stages.

    It is not an ``nn.Module`` child of anything, so a pixel model's checkpoint does not store the
    trunk (its weights ship with the package); tracing still records it, so an ONNX export holds it.
    """

    def __init__(self, model: nn.Module, config: ModelConfig) -> None:
        own = getattr(model, "frozen_identity", lambda: None)()
        self.shared = own == trunk_identity(config)
        self.trunk = None if self.shared else FrozenTrunk(config.trunk, stages=tuple(config.trunk_stages))

    def __call__(self, images: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        """Features for images ``(B, C, R, R)`` whose model-prepared inputs are ``prepared`` (for a
        pixel model both are the images; for a feature model ``images`` is not read)."""
        if self.shared:
            return prepared
        assert self.trunk is not None
        self.trunk.to(images.device)
        return self.trunk(images.mean(dim=1, keepdim=True) if images.shape[1] != 1 else images)
