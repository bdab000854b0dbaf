"""The plain autoencoder baselines: AE (MSE) and AE-U (one hallucination-aware decoder).

Both are the paper's encoder followed by one decoder of the paper's expert design
(:class:`~medmoe.model.reference.ExpertDecoder`), with no router and no prompt — the DDAD/MedIAnomaly
AE at the paper's sizes. Trained on one task they are the single-task baselines; trained on all
tasks, the universal AE.

- ``ae``: decoder outputs ``x_hat`` only; loss MSE; score ``mean (x − x_hat)²``.
- ``ae_u``: decoder outputs ``x_hat`` and ``u``; loss Eq. 5; score the mean of Eq. 5's first
  term ``(x − x_hat)² · exp(−u²)`` (the paper's anomaly map).
"""

from __future__ import annotations

import torch

from medmoe.model.base import AnomalyModel
from medmoe.model.baselines._common import decoded_output
from medmoe.model.config import ModelConfig
from medmoe.model.output import ModelOutput
from medmoe.model.reference import ExpertDecoder
from medmoe.model.registry import register_model
from medmoe.model.scoring import to_model_range
from medmoe.model.vision import PixelSettings, VisionEncoder


class AutoEncoder(AnomalyModel):
    """Encoder + one decoder; the hallucination head follows ``config.hallucination``.

    Shapes: ``x (B, C, R, R)`` → :class:`ModelOutput` with ``x_hat (B, C, R, R)``, ``u (B, C, R, R)``
    or ``None``, ``anomaly_map (B, 1, R, R)``, ``score (B,)``, ``features (B, latent_dim)``;
    router fields ``None``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VisionEncoder(config)
        self.decoder = ExpertDecoder(config)

    def forward_prepared(self, x: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """Reconstruct and score ``x``; ``text_embedding`` is ignored (no prompts)."""
        z = to_model_range(x, self.config.value_range)
        v = self.encoder(z)
        return decoded_output(z, self.decoder(v), v, self.config)


register_model("ae", settings=PixelSettings, fixes={"prompt": False, "hallucination": False})(AutoEncoder)
register_model("ae_u", settings=PixelSettings, fixes={"prompt": False, "hallucination": True})(AutoEncoder)
