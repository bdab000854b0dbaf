"""Training objectives (paper §3.4): Eq. 4 routing loss, Eq. 5 hallucination-aware reconstruction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def discounted_error(error: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """Eq. 5's first term, the anomaly map: ``error · exp(−u²)`` elementwise (``error`` itself without ``u``).

    ``error`` is the per-element error (``(x − x_hat)²`` of pixels, or a feature model's normalised
    feature error); ``u`` broadcasts against it.
    """
    return error if u is None else error * torch.exp(-u.square())


def hallucination_aware_loss(error: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """Eq. 5 on a per-element error: ``mean(error · exp(−u²) + u²)`` (``mean(error)`` without ``u``). The one
    home of Eq. 5: the pixel model, the feature model and an added task's adapter all train on it."""
    return error.mean() if u is None else (error * torch.exp(-u.square()) + u.square()).mean()


def hallucination_loss(x: torch.Tensor, x_hat: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Eq. 5 in pixels: ``mean_{i,j} ((x − x_hat)² · exp(−u²) + u²)`` over batch, channels and pixels.

    Args:
        x: input ``(B, C, H, W)``.
        x_hat: reconstruction ``(B, C, H, W)``.
        u: hallucination map ``(B, C, H, W)``.
    """
    return hallucination_aware_loss((x - x_hat).square(), u)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Plain MSE, the ablation without hallucination maps (Eq. 5 with ``u = 0``)."""
    return F.mse_loss(x_hat, x)


def routing_loss(logits: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
    """Eq. 4: cross-entropy between the router's logits ``(B, N)`` and task ids ``(B,)``.

    Task ``i`` is matched to expert ``i`` (so N must be at least the number of tasks).
    """
    return F.cross_entropy(logits, task_ids)


@dataclass(frozen=True)
class LossParts:
    """The total loss and its parts (detached parts for logging)."""

    total: torch.Tensor
    routing: torch.Tensor
    reconstruction: torch.Tensor


def total_loss(x: torch.Tensor, x_hat: torch.Tensor, u: torch.Tensor | None,
               router_logits: torch.Tensor | None, task_ids: torch.Tensor,
               alpha: float, beta: float) -> LossParts:
    """Eq. 6: ``alpha · L_rn + beta · L_re``.

    ``u=None`` uses plain MSE (no hallucination head); ``router_logits=None`` drops the routing term
    (models without a router).
    """
    rec = reconstruction_loss(x, x_hat) if u is None else hallucination_loss(x, x_hat, u)
    rn = routing_loss(router_logits, task_ids) if router_logits is not None else rec.new_zeros(())
    return LossParts(total=alpha * rn + beta * rec, routing=rn.detach(), reconstruction=rec.detach())
