"""Batched inference: run a model over in-memory images and collect scores, maps and routing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medmoe.model.scoring import to_image_range


@dataclass
class Predictions:
    """Model outputs for ``n`` images (numpy, on the CPU).

    Attributes:
        scores: image anomaly scores ``(n,)``.
        router_weights: expert weights ``(n, N)``, or ``None`` without a router.
        features: image features ``v`` ``(n, latent_dim)``.
        anomaly_maps: ``(n, R, R)`` when maps were kept, else ``None``.
        reconstructions: ``(n, C, R, R)`` in the [0, 1] image range when maps were kept and the model
            reconstructs pixels, else ``None``.
        hallucination_maps: ``(n, C, R, R)`` when maps were kept and the model has them.
    """

    scores: np.ndarray
    router_weights: np.ndarray | None
    features: np.ndarray
    anomaly_maps: np.ndarray | None = None
    reconstructions: np.ndarray | None = None
    hallucination_maps: np.ndarray | None = None


def task_text_embeddings(prompt_embeddings: torch.Tensor | None,
                         task_indices: torch.Tensor) -> torch.Tensor | None:
    """Per-image prompt embeddings ``(n, D)`` from per-task rows ``(T, D)`` and indices ``(n,)``."""
    return None if prompt_embeddings is None else prompt_embeddings[task_indices]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, text_embeddings: torch.Tensor | None, *,
            batch_size: int = 64, keep_maps: bool = False, device: torch.device | str = "cpu",
            prepared: bool = False) -> Predictions:
    """Run ``model`` in eval mode over ``images (n, C, R, R)`` in batches.

    Args:
        model: any registered model (returns a :class:`~medmoe.model.moe.ModelOutput`).
        images: inputs in [0, 1].
        text_embeddings: ``(n, D)`` frozen prompt embeddings, or ``None`` for prompt-free models.
        batch_size: images per forward pass.
        keep_maps: also return anomaly maps, reconstructions and hallucination maps (memory:
            ``n·R²`` floats each).
        device: where to run.
        prepared: ``images`` already are the model's prepared inputs (trunk features).
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("score", "weights", "features", "map", "x_hat", "u")}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        e = None if text_embeddings is None else text_embeddings[start:start + batch_size].to(device)
        out = model(x, e, prepared=prepared)
        parts["score"].append(out.score.cpu().numpy())
        parts["features"].append(out.features.cpu().numpy())
        if out.router_weights is not None:
            parts["weights"].append(out.router_weights.cpu().numpy())
        if keep_maps:
            parts["map"].append(out.anomaly_map[:, 0].cpu().numpy())
            if out.x_hat is not None:
                parts["x_hat"].append(to_image_range(out.x_hat, model.config.value_range).cpu().numpy())
            if out.u is not None:
                parts["u"].append(out.u.cpu().numpy())
    model.train(was_training)

    def cat(key: str) -> np.ndarray | None:
        return np.concatenate(parts[key]) if parts[key] else None

    scores = cat("score")
    return Predictions(
        scores=scores if scores is not None else np.zeros(0, np.float32),
        router_weights=cat("weights"),
        features=cat("features") if parts["features"] else np.zeros((0, 0), np.float32),
        anomaly_maps=cat("map"),
        reconstructions=cat("x_hat"),
        hallucination_maps=cat("u"),
    )
