"""MemAE (Gong et al., 2019): an autoencoder whose decoder reads the latent back from a memory.

The encoder's feature ``z (B, D)`` addresses ``N`` learned memory items ``M (N, D)``:
``w = softmax(z Mᵀ)`` (dot-product addressing, as in the authors' released code), hard shrinkage
``ŵ = ReLU(w − λ) · w / (|w − λ| + ε)`` then L1 renormalisation, and the decoder sees ``ŵ M``.
Normal patterns are memorised, so anomalies are reconstructed as something normal. Training adds the
entropy of ``ŵ`` (weight :data:`ENTROPY_WEIGHT`, the paper's 0.0002) to the MSE, returned as
``ModelOutput.aux_loss``. The score is the mean squared reconstruction error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medmoe.model.base import AnomalyModel
from medmoe.model.baselines._common import decoded_output
from medmoe.model.config import ModelConfig
from medmoe.model.output import ModelOutput
from medmoe.model.reference import ExpertDecoder
from medmoe.model.registry import register_model
from medmoe.model.scoring import to_model_range
from medmoe.model.vision import PixelSettings, VisionEncoder

MEMORY_SLOTS = 25
"""Memory items N."""
SHRINK_THRESHOLD = 1.0 / MEMORY_SLOTS
"""λ, at the low end of the paper's recommended ``[1/N, 3/N]``."""
ENTROPY_WEIGHT = 2e-4
"""Weight of the attention-entropy loss (the MemAE paper's α)."""
_EPS = 1e-12


def hard_shrink(weights: torch.Tensor, threshold: float) -> torch.Tensor:
    """MemAE's differentiable hard shrinkage followed by L1 renormalisation.

    Shapes: ``(B, N)`` non-negative rows summing to 1 → ``(B, N)``; entries ``≤ threshold`` become 0
    and each row is rescaled to sum to 1 (a row whose entries are all below the threshold stays 0).
    """
    shrunk = F.relu(weights - threshold) * weights / ((weights - threshold).abs() + _EPS)
    return F.normalize(shrunk, p=1, dim=1)


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``−Σ_i w_i log w_i``; ``(B, N)`` → scalar."""
    return -(weights * torch.log(weights + _EPS)).sum(dim=1).mean()


class Memory(nn.Module):
    """``N`` memory items of size D and their addressing.

    Shapes: ``z (B, D)`` → ``(z_hat (B, D), weights (B, N))``.
    """

    def __init__(self, slots: int, dim: int, threshold: float) -> None:
        super().__init__()
        self.items = nn.Parameter(torch.empty(slots, dim))
        nn.init.uniform_(self.items, -1.0 / dim**0.5, 1.0 / dim**0.5)
        self.threshold = threshold

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = hard_shrink(torch.softmax(z @ self.items.t(), dim=1), self.threshold)
        return weights @ self.items, weights


class MemAE(AnomalyModel):
    """The paper's encoder, a :class:`Memory` over its feature, one plain decoder.

    Shapes: ``x (B, C, R, R)`` → :class:`ModelOutput` (``u`` and router fields ``None``;
    ``features`` is the encoder's ``z (B, latent_dim)`` before the memory read; ``aux_loss`` the
    weighted attention entropy).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VisionEncoder(config)
        self.memory = Memory(MEMORY_SLOTS, config.latent_dim, SHRINK_THRESHOLD)
        self.decoder = ExpertDecoder(config)

    def forward_prepared(self, x: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """Reconstruct and score ``x``; ``text_embedding`` is ignored (no prompts)."""
        z = to_model_range(x, self.config.value_range)
        v = self.encoder(z)
        v_hat, weights = self.memory(v)
        aux = ENTROPY_WEIGHT * attention_entropy(weights)
        return decoded_output(z, self.decoder(v_hat), v, self.config, aux_loss=aux)


register_model("memae", settings=PixelSettings, fixes={"prompt": False, "hallucination": False})(MemAE)
