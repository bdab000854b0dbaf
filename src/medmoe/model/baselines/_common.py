"""What the pixel baselines share: the output of an encoder–decoder pair."""

from __future__ import annotations

import torch

from medmoe.model.config import ModelConfig
from medmoe.model.output import ModelOutput, split_decoded
from medmoe.model.scoring import anomaly_map, image_score


def decoded_output(x: torch.Tensor, decoded: torch.Tensor, features: torch.Tensor, config: ModelConfig,
                   aux_loss: torch.Tensor | None = None) -> ModelOutput:
    """Split a decoder's output into ``x_hat`` and ``u`` and score it.

    Args:
        x: input ``(B, C, R, R)``.
        decoded: decoder output ``(B, C, R, R)`` or, with a hallucination head, ``(B, 2C, R, R)``.
        features: the image feature ``v`` ``(B, latent_dim)``.
        config: the model's settings (channels, hallucination head: :func:`~medmoe.model.output.split_decoded`).
        aux_loss: a model-specific scalar added to the training loss (MemAE's entropy term).
    """
    x_hat, u = split_decoded(decoded, config)
    amap = anomaly_map(x, x_hat, u)
    return ModelOutput(x_hat=x_hat, u=u, anomaly_map=amap, score=image_score(amap), router_weights=None,
                       router_logits=None, features=features, aux_loss=aux_loss)
