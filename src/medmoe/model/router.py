"""The routing network (paper §3.3.1, Eq. 1): ``s = TopK(softmax([v, tau] W + b))``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def top_k_renormalise(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest weights per row, zero the rest, and renormalise rows to sum to 1.

    The paper's TopK operator "forces only K experts to be used and skips the others"; renormalising
    keeps ``x_hat`` a convex combination of expert reconstructions for every K (for K = N it is the
    identity). Gradients flow through the kept weights.

    Args:
        probs: ``(B, N)`` softmax weights.
        k: experts to keep, ``1 ≤ k ≤ N``.

    Returns:
        ``(B, N)`` weights with exactly ``k`` non-zeros per row (ties broken by index), rows sum to 1.
    """
    if k >= probs.shape[-1]:
        return probs
    kept, idx = probs.topk(k, dim=-1)
    sparse = torch.zeros_like(probs).scatter(-1, idx, kept)
    return sparse / sparse.sum(dim=-1, keepdim=True)


class Router(nn.Module):
    """One FC layer over the concatenated image and prompt features, then softmax and top-K.

    Shapes: ``features (B, in_dim)`` → ``(logits (B, N), weights (B, N))``.
    """

    def __init__(self, in_dim: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_experts)
        self.top_k = top_k

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits (for the routing loss) and the sparse, renormalised expert weights."""
        logits = self.fc(features)
        return logits, top_k_renormalise(logits.softmax(dim=-1), self.top_k)


def router_input(v: torch.Tensor, prompt_encoder: nn.Module | None, text_embedding: torch.Tensor | None,
                 normalise: bool) -> torch.Tensor:
    """What the router sees: ``[v, tau]`` ``(B, latent + prompt_dim)``, or ``v`` without a prompt
    encoder; each part layer-normalised (no parameters) when ``normalise``.

    Raises:
        ValueError: the model routes on prompts but ``text_embedding`` is ``None``.
    """
    parts = [v]
    if prompt_encoder is not None:
        if text_embedding is None:
            raise ValueError("this model routes on prompts: pass text_embedding (B, text_dim)")
        parts.append(prompt_encoder(text_embedding))
    if normalise:
        parts = [F.layer_norm(p, p.shape[-1:]) for p in parts]
    return torch.cat(parts, dim=1)
