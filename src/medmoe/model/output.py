"""The named outputs every registered model returns, and their conversion to
:class:`~medmoe.output_arrays.OutputArrays`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medmoe.model.config import ModelConfig
from medmoe.output_arrays import OutputArrays


@dataclass(frozen=True)
class ModelOutput:
    """Named outputs of :class:`PromptMoE` and of every baseline (B images, C channels, R×R pixels, N experts).

    Attributes:
        x_hat: reconstruction ``Σ s_k mu_k``, ``(B, C, R, R)``, in the model's value range
            (:attr:`ModelConfig.value_range`; :func:`~medmoe.model.scoring.to_image_range` maps it back);
            ``None`` for models that reconstruct trunk features rather than pixels.
        u: hallucination map ``Σ s_k sigma_k``, ``(B, C, R, R)`` (``(B, 1, R, R)``, upsampled from the
            feature grid, for feature models); ``None`` without the hallucination head.
        anomaly_map: ``(x − x_hat)² · exp(−u²)`` averaged over channels, ``(B, 1, R, R)``, with ``x``
            mapped to the model's value range.
        score: image anomaly score, the mean of the map, ``(B,)``.
        router_weights: top-K renormalised expert weights ``s``, ``(B, N)``; ``None`` for
            models without a router (baselines).
        router_logits: the router's pre-softmax logits, ``(B, N)``; ``None`` without a router.
        features: the image feature ``v``, ``(B, latent_dim)``.
        aux_loss: a model-specific scalar its loss adds to Eq. 6 (MemAE's entropy term); ``None``
            for models without one.
        reconstruction_loss: the reconstruction term computed inside the forward pass, for models
            whose error lives where the output fields do not reach (``feature_moe``: Eq. 5 on the
            feature grid); ``None`` for pixel models, whose loss is computed from ``x_hat`` and ``u``.
    """

    x_hat: torch.Tensor | None
    u: torch.Tensor | None
    anomaly_map: torch.Tensor
    score: torch.Tensor
    router_weights: torch.Tensor | None
    router_logits: torch.Tensor | None
    features: torch.Tensor
    aux_loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None



def split_decoded(decoded: torch.Tensor, config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A pixel decoder's output ``(B, C, R, R)``, or ``(B, 2C, R, R)`` with the hallucination head, as
    ``(x_hat, u)``: channels ``[:C]`` are the reconstruction ``mu`` and ``[C:]`` the hallucination map
    ``sigma`` (``u`` is ``None`` without the head). The config decides; the width must agree with it."""
    c = config.in_channels
    expected = 2 * c if config.hallucination else c
    if decoded.shape[1] != expected:
        head = "with" if config.hallucination else "without"
        raise ValueError(f"a decoder output of {decoded.shape[1]} channels for {c} input channels {head} the "
                         f"hallucination head (expected {expected})")
    return decoded[:, :c], (decoded[:, c:] if config.hallucination else None)


def deployed_outputs(out: ModelOutput, scope_distances: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """The :data:`~medmoe.output_arrays.DEPLOYED_OUTPUTS` of one forward pass by name (``anomaly_map`` as
    ``(B, R, R)``); ``None`` for those the model lacks."""
    return {"score": out.score, "anomaly_map": out.anomaly_map[:, 0], "hallucination_map": out.u,
            "router_weights": out.router_weights, "scope_distances": scope_distances}


def to_arrays(tensors: dict[str, torch.Tensor | None]) -> OutputArrays:
    """Named tensors (any device or float type; ``None`` for absent ones) as an :class:`OutputArrays`
    of float32 arrays."""
    arrays = {name: None if t is None else t.detach().float().cpu().numpy() for name, t in tensors.items()}
    score = arrays.pop("score")
    if score is None:
        raise ValueError("a model output has a score")
    return OutputArrays(score, **arrays)
