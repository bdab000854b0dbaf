"""The full model: vision encoder, prompt encoder, router and expert bank (paper Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.experts import ExpertBank
from medmoe.model.prompt import PromptEncoder
from medmoe.model.reference import LoopedExperts
from medmoe.model.router import Router
from medmoe.model.scoring import anomaly_map, image_score, to_model_range
from medmoe.model.vision import VisionEncoder


@dataclass(frozen=True)
class ModelOutput:
    """Named outputs of :class:`PromptMoE` and of every baseline (B images, C channels, R×R pixels, N experts).

    Attributes:
        x_hat: reconstruction ``Σ s_k mu_k``, ``(B, C, R, R)``, in the model's value range
            (:attr:`ModelConfig.value_range`; :func:`~medmoe.model.scoring.to_image_range` maps it back).
        u: hallucination map ``Σ s_k sigma_k``, ``(B, C, R, R)``; ``None`` without the
            hallucination head.
        anomaly_map: ``(x − x_hat)² · exp(−u²)`` averaged over channels, ``(B, 1, R, R)``, with ``x``
            mapped to the model's value range.
        score: image anomaly score, the mean of the map, ``(B,)``.
        router_weights: top-K renormalised expert weights ``s``, ``(B, N)``; ``None`` for
            models without a router (baselines).
        router_logits: the router's pre-softmax logits, ``(B, N)``; ``None`` without a router.
        features: the image feature ``v``, ``(B, latent_dim)``.
        aux_loss: a model-specific scalar the trainer adds to the Eq. 6 loss (MemAE's entropy
            term); ``None`` for models without one.
    """

    x_hat: torch.Tensor
    u: torch.Tensor | None
    anomaly_map: torch.Tensor
    score: torch.Tensor
    router_weights: torch.Tensor | None
    router_logits: torch.Tensor | None
    features: torch.Tensor
    aux_loss: torch.Tensor | None = None


MoEOutput = ModelOutput  # the paper's name for it


class PromptMoE(nn.Module):
    """Prompt-driven mixture of hallucination-aware experts.

    Args:
        config: architecture.
        experts: ``"bank"`` (grouped, fast; default) or ``"loop"`` (the plain per-expert reference,
            for benchmarks and tests).
    """

    def __init__(self, config: ModelConfig, experts: str = "bank") -> None:
        super().__init__()
        if experts not in ("bank", "loop"):
            raise ValueError(f"experts must be 'bank' or 'loop', not {experts!r}")
        self.config = config
        self.encoder = VisionEncoder(config)
        self.prompt_encoder = PromptEncoder(config) if config.prompt else None
        router_in = config.latent_dim + (config.prompt_dim if config.prompt else 0)
        self.router = Router(router_in, config.num_experts, config.top_k)
        self.experts = ExpertBank(config) if experts == "bank" else LoopedExperts(config)

    def forward(self, x: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """Reconstruct ``x`` and score it.

        Args:
            x: images ``(B, C, R, R)`` in [0, 1].
            text_embedding: frozen prompt embeddings ``(B, text_dim)``; required when the
                model uses prompts, ignored otherwise.
        """
        z = to_model_range(x, self.config.value_range)
        v = self.encoder(z)
        logits, weights = self.router(self.router_input(v, text_embedding))
        mixed = self.experts.mix(v, weights)  # Σ_k s_k (mu_k, sigma_k): (B, C or 2C, R, R)
        c = self.config.in_channels
        x_hat = mixed[:, :c]
        u = mixed[:, c:] if self.config.hallucination else None
        amap = anomaly_map(z, x_hat, u)
        return ModelOutput(x_hat=x_hat, u=u, anomaly_map=amap, score=image_score(amap),
                         router_weights=weights, router_logits=logits, features=v)

    def router_input(self, v: torch.Tensor, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """What the router sees: ``[v, tau]`` ``(B, latent + prompt_dim)``, or ``v`` without prompts;
        each part layer-normalised when ``config.router_norm``."""
        parts = [v]
        if self.prompt_encoder is not None:
            if text_embedding is None:
                raise ValueError("this model routes on prompts: pass text_embedding (B, text_dim)")
            parts.append(self.prompt_encoder(text_embedding))
        if self.config.router_norm:
            parts = [F.layer_norm(p, p.shape[-1:]) for p in parts]
        return torch.cat(parts, dim=1)
