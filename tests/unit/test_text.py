"""Prompt normalisation, the embedding cache and the offline MiniLM encoder."""

from __future__ import annotations

import numpy as np
import pytest

from medmoe.errors import ConfigError, PromptError
from medmoe.tasks import default_registry
from medmoe.text import PromptEmbeddingCache, build_text_encoder, normalise_prompt
from medmoe.text.prompts import encoder_text, expand_abbreviations


class CountingEncoder:
    name, dim = "fake", 3

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, prompts):
        self.calls.append(list(prompts))
        return np.array([[len(p), 1.0, 0.0] for p in prompts], dtype=np.float32)


def test_normalise_prompt() -> None:
    assert normalise_prompt("  Brain   MRI\tslice. ") == "Brain MRI slice."
    for empty in ("", "   \n"):
        with pytest.raises(PromptError, match="empty"):
            normalise_prompt(empty)


def test_abbreviations_expand_whole_words_only() -> None:
    assert expand_abbreviations("CXR of a child") == "chest X-ray of a child"
    assert expand_abbreviations("Head CT slice.") == "Head CT (computed tomography) slice."
    assert expand_abbreviations("breast US") == "breast ultrasound"
    assert expand_abbreviations("use us CTA") == "use us CTA"  # lower-case word and longer token untouched


def test_cache_encodes_each_prompt_once() -> None:
    encoder = CountingEncoder()
    cache = PromptEmbeddingCache("fake", encoder=encoder)
    a = cache.embed(["Head CT slice.", "Brain MRI slice.", "Head  CT slice."])
    assert a.shape == (3, 3)
    np.testing.assert_array_equal(a[0], a[2])
    cache.embed(["Brain MRI slice."])
    assert encoder.calls == [[encoder_text("Head CT slice."), encoder_text("Brain MRI slice.")]]
    assert "Brain MRI slice." in cache and len(cache) == 2


def test_cache_with_stored_entries_never_builds_encoder() -> None:
    key = encoder_text("Head CT slice.")
    cache = PromptEmbeddingCache("no-such-encoder", entries={key: np.ones(4, np.float32)})
    np.testing.assert_array_equal(cache.embed(["Head CT slice."]), np.ones((1, 4)))
    with pytest.raises(ConfigError, match="unknown text encoder"):
        cache.embed(["something new"])


def test_clip_without_weights_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="without network access"):
        build_text_encoder("clip:/nonexistent/clip-model")


def test_minilm_embeds_offline_and_separates_tasks() -> None:
    encoder = build_text_encoder("minilm")
    prompts = default_registry().prompts
    e = encoder.encode([encoder_text(p) for p in prompts])
    assert e.shape == (5, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    queries = ["CXR", "ultrasound of the breast", "CT of the head"]
    q = encoder.encode([encoder_text(p) for p in queries])
    assert list((q @ e.T).argmax(axis=1)) == [0, 3, 4]
