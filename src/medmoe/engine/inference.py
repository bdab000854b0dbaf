"""Batched inference: run a model over in-memory images and collect scores, maps and routing."""

from __future__ import annotations

import torch

from medmoe.model.base import AnomalyModel
from medmoe.model.output import deployed_outputs, to_arrays
from medmoe.model.scoring import to_image_range
from medmoe.output_arrays import OutputArrays


def task_text_embeddings(prompt_embeddings: torch.Tensor | None,
                         task_indices: torch.Tensor) -> torch.Tensor | None:
    """Per-image prompt embeddings ``(n, D)`` from per-task rows ``(T, D)`` and indices ``(n,)``."""
    return None if prompt_embeddings is None else prompt_embeddings[task_indices]


@torch.no_grad()
def predict(model: AnomalyModel, images: torch.Tensor, text_embeddings: torch.Tensor | None, *,
            batch_size: int = 64, keep_maps: bool = False, device: torch.device | str = "cpu",
            prepared: bool = False) -> OutputArrays:
    """Run ``model`` in eval mode over ``images (n, C, R, R)`` in batches.

    Args:
        model: any registered model (returns a :class:`~medmoe.model.output.ModelOutput`).
        images: inputs in [0, 1].
        text_embeddings: ``(n, D)`` frozen prompt embeddings, or ``None`` for prompt-free models.
        batch_size: images per forward pass.
        keep_maps: also return anomaly maps, reconstructions and hallucination maps (memory:
            ``n·R²`` floats each).
        device: where to run.
        prepared: ``images`` already are the model's prepared inputs (trunk features).

    Returns:
        Scores, router weights and features, and with ``keep_maps`` the maps and reconstructions.
    """
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        e = None if text_embeddings is None else text_embeddings[start:start + batch_size].to(device)
        out = model(x, e, prepared=prepared)
        named = deployed_outputs(out)
        if not keep_maps:
            named["anomaly_map"] = named["hallucination_map"] = None
        x_hat = out.x_hat if keep_maps else None
        parts.append(to_arrays({
            **named, "features": out.features,
            "reconstruction": None if x_hat is None else to_image_range(x_hat, model.config.value_range),
        }))
    model.train(was_training)
    return OutputArrays.concatenate(parts)
