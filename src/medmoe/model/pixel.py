"""The paper's pixel model, as published (architecture ``pixel_moe``; ``moe`` before 0.2): vision encoder,
prompt encoder, router and expert bank (paper Fig. 3)."""

from __future__ import annotations

import torch

from medmoe.model.base import AnomalyModel
from medmoe.model.config import ModelConfig
from medmoe.model.experts import ExpertBank
from medmoe.model.output import ModelOutput, split_decoded
from medmoe.model.prompt import PromptEncoder
from medmoe.model.reference import LoopedExperts
from medmoe.model.registry import register_model
from medmoe.model.router import Router, router_input
from medmoe.model.scoring import anomaly_map, image_score, to_model_range
from medmoe.model.vision import PixelSettings, VisionEncoder

MoEOutput = ModelOutput  # the paper's name for it


@register_model("pixel_moe", experts_per_task=True, settings=PixelSettings)
class PromptMoE(AnomalyModel):
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

    def forward_prepared(self, x: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
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
        x_hat, u = split_decoded(mixed, self.config)
        amap = anomaly_map(z, x_hat, u)
        return ModelOutput(x_hat=x_hat, u=u, anomaly_map=amap, score=image_score(amap),
                         router_weights=weights, router_logits=logits, features=v)

    def router_input(self, v: torch.Tensor, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """What the router sees (:func:`~medmoe.model.router.router_input`)."""
        return router_input(v, self.prompt_encoder, text_embedding, self.config.router_norm)
