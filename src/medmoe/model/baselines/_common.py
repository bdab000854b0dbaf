"""What every baseline shares: the no-prompt check and the output of an encoder–decoder pair."""

from __future__ import annotations

import torch

from medmoe.model.output import ModelOutput
from medmoe.model.scoring import anomaly_map, image_score


def decoded_output(x: torch.Tensor, decoded: torch.Tensor, features: torch.Tensor, in_channels: int,
                   aux_loss: torch.Tensor | None = None) -> ModelOutput:
    """Split a decoder's output into ``x_hat`` and ``u`` and score it.

    Args:
        x: input ``(B, C, R, R)``.
        decoded: decoder output ``(B, C, R, R)`` or, with a hallucination head, ``(B, 2C, R, R)``.
        features: the image feature ``v`` ``(B, latent_dim)``.
        in_channels: C.
        aux_loss: a model-specific scalar added to the training loss (MemAE's entropy term).
    """
    x_hat = decoded[:, :in_channels]
    u = decoded[:, in_channels:] if decoded.shape[1] > in_channels else None
    amap = anomaly_map(x, x_hat, u)
    return ModelOutput(x_hat=x_hat, u=u, anomaly_map=amap, score=image_score(amap), router_weights=None,
                       router_logits=None, features=features, aux_loss=aux_loss)
