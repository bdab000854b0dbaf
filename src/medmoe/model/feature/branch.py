"""One scoring branch of the feature family: from what the experts decode to the anomaly map and Eq. 5's input.

The network (:class:`~medmoe.model.feature.network.FeatureMoE`) and an added task's adapter
(:class:`~medmoe.model.feature.adapter.TaskAdapter`) score the same way, each with its own experts,
memory, temperature and retrieval scale:

- the raw error per location: the retrieval error of each patch against the memory
  (``feature_expert: retrieve``; the experts then decode only ``u``), or the distance of the
  standardised features ``z`` to the decoded ``mu`` (``reconstruct`` and ``hybrid``), with ``u`` the
  decoded channel after ``mu`` when the hallucination head is on;
- the tempered error ``e = raw / T`` (``T``: a running quantile of ``raw`` on training normals,
  :func:`update_temperature`), the map ``e·exp(−u²)`` (:func:`~medmoe.model.losses.discounted_error`);
- ``hybrid`` at inference: that map mixed with the retrieval error over its training-normal median
  (``hybrid_weight`` of the latter; 0.5, their mean, by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from medmoe.model.config import ModelConfig
from medmoe.model.feature.settings import FeatureMoESettings
from medmoe.model.losses import discounted_error

ERROR_MOMENTUM = 0.05
"""Update rate of the running error temperature (per training step)."""


@dataclass(frozen=True)
class BranchMaps:
    """What one branch gives on the feature grid, each ``(B, 1, h, w)``.

    Attributes:
        anomaly_map: the map the score is read from.
        u: the hallucination map (``None`` without the head).
        error: the tempered error ``e``, Eq. 5's input.
        raw: the error before tempering.
    """

    anomaly_map: torch.Tensor
    u: torch.Tensor | None
    error: torch.Tensor
    raw: torch.Tensor


def update_temperature(scale: torch.Tensor, raw: torch.Tensor, quantile: float, rate: float = ERROR_MOMENTUM) -> None:
    """Move the temperature ``scale`` (a 0-d buffer) towards the ``quantile`` of the errors ``raw`` by ``rate``
    (``1``: set it there), in place and outside autograd: batch-norm-like running statistics."""
    with torch.no_grad():
        target = torch.quantile(raw.detach().flatten().float(), quantile)
        scale.lerp_(target.clamp_min(1e-8), rate)


def score_branch(config: ModelConfig, decoded: torch.Tensor | None, z: torch.Tensor,
                 retrieval: Callable[[], torch.Tensor], distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 error_scale: torch.Tensor, retrieval_scale: torch.Tensor, *, training: bool,
                 track_temperature: bool) -> BranchMaps:
    """One branch's maps (module docstring).

    Args:
        config: ``hallucination`` and the :class:`FeatureMoESettings` ``feature_expert``, ``error_quantile``.
        decoded: the mixed experts' output ``(B, D [+ 1], h, w)`` (``(B, 1, h, w)`` or ``None`` for
            ``retrieve``).
        z: standardised trunk features ``(B, D, h, w)``.
        retrieval: the retrieval error ``(B, 1, h, w)`` against the branch's memory (called only where used).
        distance: the error of a reconstruction against ``z``.
        error_scale, retrieval_scale: the branch's temperature and retrieval scale (0-d buffers).
        training: the module's mode (``hybrid`` leaves the retrieval out in training: nothing to learn).
        track_temperature: update ``error_scale`` from this batch (the network, in training).
    """
    settings = config.settings_as(FeatureMoESettings)
    if settings.feature_expert == "retrieve":
        raw, u = retrieval(), decoded
    else:
        assert decoded is not None
        d = z.shape[1]
        raw = distance(z, decoded[:, :d])
        u = decoded[:, d:] if config.hallucination else None
    if track_temperature:
        update_temperature(error_scale, raw, settings.error_quantile)
    e = raw / error_scale
    amap = discounted_error(e, u)
    if settings.feature_expert == "hybrid" and not training:
        weight = settings.hybrid_weight
        amap = (1 - weight) * amap + weight * (retrieval() / retrieval_scale)
    return BranchMaps(anomaly_map=amap, u=u, error=e, raw=raw)
