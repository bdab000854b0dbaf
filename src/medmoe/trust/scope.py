"""What an image looks like, from the image alone: distances to each trained task's normals.

Every trained model carries a *scope head*: the frozen ImageNet trunk's feature map of the image
(:class:`~medmoe.model.feature.trunk.FrozenTrunk`, the model's own trunk for feature models), summarised per
channel over the locations (:func:`descriptor`, ``2 D`` values), and per task the mean and
Ledoit–Wolf-shrunk precision of that descriptor over the task's training normals, a copy of each with
a synthetic lesion and a copy of each under an acquisition change (another gamma, contrast, blur,
noise, zoom; :func:`medmoe.engine.trust_fitting.reference_copies`), so the covariance spans the directions
a lesion or another scanner moves the descriptor in: an abnormal scan of a task, or one from another
machine, stays in its scope; a change of modality does not (validation,
``benchmarks/results/trust-design.md``, ``maha_lesion_shift``: large synthetic lesions flagged 4.0 %
instead of 15.5 %, acquisition-changed normals 18.4 % instead of 71.2 %, left-out tasks 100 % instead of
97.8 %). Its output is the squared Mahalanobis distance of an image to every task, ``(B, T)``; it is
part of the network (torch and ONNX alike), so the decisions drawn from it
(:mod:`medmoe.trust.calibration`) need only numpy.

Summaries (:data:`DESCRIPTORS`; a head stores which one it was fitted with): ``median_iqr``, the
spatial median and interquartile range (the default), and ``mean_std``, the spatial mean and standard
deviation (heads written before the choice existed). Chosen on validation data by
``benchmarks/trust_design.py`` (``benchmarks/results/trust-design.md``): against a 16 × 16 thumbnail
and nearest-neighbour distances, both identify the task of 100 % of validation normals and flag 100 %
of natural images and 98 % of left-out tasks' validation images as out of scope, at 2.2 % of
in-scope validation normals flagged; a lesion covering a minority of the image moves the robust
summary less (synthetic lesions of 6–20 % of the image in validation normals flagged 15.5 % against
22.3 %).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.feature.trunk import FrozenTrunk, trunk_identity

SCOPE_PREFIX = "__scope__."
"""Key prefix of the scope head's tensors in ``model.safetensors``."""


DESCRIPTORS = ("mean_std", "median_iqr")
"""Per-channel spatial summaries a scope head can use; a head stores its index (``descriptor_code``)."""

DEFAULT_DESCRIPTOR = "median_iqr"
"""What newly fitted scope heads use."""


def _descriptor_code(kind: str) -> int:
    """The index of ``kind`` in :data:`DESCRIPTORS`, or a ``ValueError`` naming the known ones."""
    if kind not in DESCRIPTORS:
        raise ValueError(f"unknown scope descriptor {kind!r}; expected one of {DESCRIPTORS}")
    return DESCRIPTORS.index(kind)


def _quantiles(flat: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """Quantiles over the last dimension with linear interpolation (as ``torch.quantile``), by sorting,
    which ONNX export supports: ``(B, D, L)`` → one ``(B, D)`` per ``q``."""
    ordered = flat.sort(dim=2).values
    last = flat.shape[2] - 1
    out = []
    for q in qs:
        position = q * last
        lo = int(position)
        hi = min(lo + 1, last)
        frac = position - lo
        out.append(ordered[:, :, lo] * (1.0 - frac) + ordered[:, :, hi] * frac)
    return out


def descriptor(features: torch.Tensor, kind: str = DEFAULT_DESCRIPTOR) -> torch.Tensor:
    """``(B, D, h, w)`` trunk features → ``(B, 2 D)``: per channel the spatial median and interquartile
    range (``median_iqr``) or mean and standard deviation (``mean_std``)."""
    flat = features.flatten(2)
    _descriptor_code(kind)  # a known kind
    if kind == "mean_std":
        return torch.cat([flat.mean(dim=2), flat.std(dim=2)], dim=1)
    q25, median, q75 = _quantiles(flat, (0.25, 0.5, 0.75))
    return torch.cat([median, q75 - q25], dim=1)


class ScopeHead(nn.Module):
    """Squared Mahalanobis distances of image descriptors to each task's training normals.

    Args:
        mean: ``(T, F)`` per-task descriptor means.
        precision: ``(T, F, F)`` per-task inverse (shrunk) covariances.
        kind: the descriptor (:data:`DESCRIPTORS`) the statistics were fitted on.
    """

    mean: torch.Tensor
    precision: torch.Tensor
    descriptor_code: torch.Tensor

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, kind: str = DEFAULT_DESCRIPTOR) -> None:
        super().__init__()
        code = _descriptor_code(kind)
        self.register_buffer("mean", mean.float())
        self.register_buffer("precision", precision.float())
        self.register_buffer("descriptor_code", torch.tensor([code], dtype=torch.int64))
        self.kind = kind

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> ScopeHead:
        """The head stored as ``tensors`` (its state dict); heads stored without a ``descriptor_code``
        were fitted on ``mean_std``."""
        code = tensors.get("descriptor_code")
        kind = DESCRIPTORS[int(code.reshape(-1)[0])] if code is not None else "mean_std"
        return cls(tensors["mean"], tensors["precision"], kind)

    @classmethod
    def fit(cls, descriptors: list[np.ndarray], kind: str = DEFAULT_DESCRIPTOR) -> ScopeHead:
        """Fit from each task's training-normal descriptors of ``kind`` (``descriptors[t]``:
        ``(n_t, F)``, ``n_t ≥ 1``; a task with a single image gets the covariance of all tasks' images
        pooled)."""
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
        return cls(torch.from_numpy(np.stack(means)), torch.from_numpy(np.stack(precisions)), kind)

    def describe(self, features: torch.Tensor) -> torch.Tensor:
        """This head's descriptor of trunk features: ``(B, D, h, w)`` → ``(B, F)``."""
        return descriptor(features, self.kind)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, D, h, w)`` → squared distances ``(B, T)``."""
        return self.distances(self.describe(features))

    def distances(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Descriptors ``(B, F)`` → squared Mahalanobis distances to each task ``(B, T)``."""
        delta = descriptors[:, None, :] - self.mean[None]  # (B, T, F)
        return torch.einsum("btf,tfg,btg->bt", delta, self.precision, delta).clamp_min(0.0)

    def extended(self, other: ScopeHead) -> ScopeHead:
        """A head with ``other``'s tasks appended after this one's (rows of this head unchanged; both
        must use the same descriptor)."""
        if other.kind != self.kind:
            raise ValueError(f"cannot extend a {self.kind!r} scope head with a {other.kind!r} one")
        return ScopeHead(torch.cat([self.mean, other.mean]), torch.cat([self.precision, other.precision]), self.kind)


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
