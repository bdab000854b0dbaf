"""CLIP's text tower (the paper's choice) via ``transformers``, for users who have its weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medmoe.text._hf import load_offline


class CLIPTextEncoder:
    """Projected CLIP text embeddings (``text_embeds``), L2-normalised.

    Args:
        source: a local folder with a CLIP checkpoint, or a hub id already in the local cache.
    """

    def __init__(self, source: str) -> None:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        self.name = f"clip:{source}"
        self.tokenizer = load_offline("CLIP tokenizer", AutoTokenizer.from_pretrained, source)
        self.model = load_offline("CLIP text model", CLIPTextModelWithProjection.from_pretrained,
                                  source).eval()
        self.dim = int(self.model.config.projection_dim)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """``n`` prompts → ``(n, projection_dim)`` float32 unit vectors."""
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        embeds = self.model(**batch).text_embeds
        return torch.nn.functional.normalize(embeds, dim=-1).numpy().astype(np.float32)
