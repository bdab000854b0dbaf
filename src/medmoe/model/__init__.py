"""The prompt-driven mixture of hallucination-aware experts (paper §3), in two families.

- The pixel model (:mod:`medmoe.model.pixel`, architecture ``pixel_moe``), the paper as published:
  ``x → VisionEncoder → v``; ``prompt embedding → PromptEncoder → tau``; ``Router([v, tau]) → s``;
  ``ExpertBank(v) → (mu_k, sigma_k)``; ``x_hat = Σ s_k mu_k``, ``u = Σ s_k sigma_k``;
  anomaly map ``(x − x_hat)² · exp(−u²)``, image score = its mean.
- The feature family (:mod:`medmoe.model.feature`, architecture ``feature_moe``, the default): the same
  mechanism on a frozen pretrained trunk.

Importing this package imports every architecture module, which registers it
(:mod:`medmoe.model.registry`): both families and the baselines. Each family declares its own settings
record (:class:`~medmoe.model.vision.PixelSettings`, :class:`~medmoe.model.feature.settings.FeatureMoESettings`)
beside the common :class:`ModelConfig`; :func:`model_config` builds one from a config's flat ``model`` section.
"""

from medmoe.model import baselines, pixel  # noqa: F401  (each registers its architectures)
from medmoe.model.config import ArchitectureSettings, ModelConfig
from medmoe.model.feature import network  # noqa: F401
from medmoe.model.pixel import ModelOutput, MoEOutput, PromptMoE
from medmoe.model.registry import (
    ARCHITECTURES,
    Architecture,
    architecture,
    create_model,
    model_config,
    register_model,
)

__all__ = [
    "ARCHITECTURES", "Architecture", "ArchitectureSettings", "ModelConfig", "ModelOutput", "MoEOutput", "PromptMoE",
    "architecture", "create_model", "model_config", "register_model",
]
