"""The prompt-driven mixture of hallucination-aware experts (paper §3).

``x → VisionEncoder → v``; ``prompt embedding → PromptEncoder → tau``; ``Router([v, tau]) → s``;
``ExpertBank(v) → (mu_k, sigma_k)``; ``x_hat = Σ s_k mu_k``, ``u = Σ s_k sigma_k``;
anomaly map ``(x − x_hat)² · exp(−u²)``, image score = its mean.
"""

from medmoe.model.config import ModelConfig
from medmoe.model.moe import ModelOutput, MoEOutput, PromptMoE
from medmoe.model.registry import MODELS, create_model, register_model

__all__ = [
    "MODELS", "ModelConfig", "ModelOutput", "MoEOutput", "PromptMoE", "create_model", "register_model",
]
