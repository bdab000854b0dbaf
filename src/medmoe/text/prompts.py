"""Prompt text normalisation, applied identically to training and query prompts before encoding."""

from __future__ import annotations

import re

from medmoe.errors import PromptError

#: Abbreviations expanded before encoding (case-sensitive, whole words), so "CXR" and
#: "chest X-ray" land near each other in the text model's space.
ABBREVIATIONS: dict[str, str] = {
    "CXR": "chest X-ray",
    "MRI": "MRI (magnetic resonance imaging)",
    "MR": "MR (magnetic resonance)",
    "CT": "CT (computed tomography)",
    "US": "ultrasound",
    "USG": "ultrasound",
    "XR": "X-ray",
}
_ABBREVIATION_RE = re.compile(r"\b(" + "|".join(sorted(ABBREVIATIONS, key=len, reverse=True)) + r")\b")


def normalise_prompt(prompt: str) -> str:
    """Strip and collapse whitespace; an empty prompt is an error."""
    if not isinstance(prompt, str):
        raise PromptError(f"a prompt must be text, not {type(prompt).__name__}")
    text = " ".join(prompt.split())
    if not text:
        raise PromptError("the prompt is empty; describe the image, e.g. 'Brain MRI slice.'")
    return text


def expand_abbreviations(prompt: str) -> str:
    """Expand common modality abbreviations (:data:`ABBREVIATIONS`) in a normalised prompt."""
    return _ABBREVIATION_RE.sub(lambda m: ABBREVIATIONS[m.group(1)], prompt)


def encoder_text(prompt: str) -> str:
    """What the text model actually reads for ``prompt``: normalised, abbreviations expanded."""
    return expand_abbreviations(normalise_prompt(prompt))
