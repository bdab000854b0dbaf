"""A cache of frozen prompt embeddings: each distinct prompt runs the text model once."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from medmoe.text.base import TextEncoder, build_text_encoder
from medmoe.text.prompts import encoder_text

MAX_LEARNED = 10_000
"""Most prompts kept beyond the seeded ones (oldest dropped first), so a long-running service that
sees endless distinct free-text prompts stays bounded."""


class PromptEmbeddingCache:
    """Maps prompts to embeddings, building the text encoder only on a cache miss; safe to share
    between threads.

    Args:
        encoder_spec: the text encoder's spec (see :func:`~medmoe.text.base.build_text_encoder`).
        entries: known embeddings, keyed by :func:`~medmoe.text.prompts.encoder_text` of the prompt
            (e.g. those stored in a checkpoint).
        encoder: an already-built encoder (optional; else built lazily from the spec).
    """

    def __init__(self, encoder_spec: str, entries: dict[str, np.ndarray] | None = None,
                 encoder: TextEncoder | None = None) -> None:
        self.encoder_spec = encoder_spec
        self._entries: dict[str, np.ndarray] = dict(entries or {})
        self._seeded = frozenset(self._entries)
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder, built on first use."""
        if self._encoder is None:
            self._encoder = build_text_encoder(self.encoder_spec)
        return self._encoder

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """``n`` prompts → ``(n, dim)`` float32 embeddings; misses are encoded in one batch."""
        keys = [encoder_text(p) for p in prompts]
        with self._lock:
            missing = [k for k in dict.fromkeys(keys) if k not in self._entries]
            if missing:
                for key, vector in zip(missing, self.encoder.encode(missing), strict=True):
                    self._entries[key] = vector.astype(np.float32)
            found = [self._entries[k] for k in keys]
            learned = [k for k in self._entries if k not in self._seeded]
            for key in learned[:max(0, len(learned) - MAX_LEARNED)]:
                del self._entries[key]
        return np.stack(found) if keys else np.zeros((0, 0), np.float32)

    def __contains__(self, prompt: str) -> bool:
        return encoder_text(prompt) in self._entries

    def __len__(self) -> int:
        return len(self._entries)
