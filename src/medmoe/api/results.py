"""The result of running a :class:`~medmoe.api.detector.Detector` on one image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class DetectionResult:
    """Score, decision and maps for one image (``H × W``: the input image's own size).

    Attributes:
        score: image anomaly score (mean of the model-resolution anomaly map; higher = more anomalous).
        is_anomalous: ``score > threshold`` (``False`` when the threshold is undefined, see ``warnings``).
        threshold: the matched task's deployable threshold (``nan`` if the model has none for it).
        task: id of the task whose threshold applies.
        prompt: the prompt the model was given (the task's trained prompt when a task was chosen).
        prompt_similarity: cosine similarity of the prompt to the task's trained prompt (1 for the
            task's own prompt).
        anomaly_map: ``(H, W)`` float32, the model's ``(R, R)`` map resampled bilinearly to the input size.
        hallucination_map: ``(H, W)`` float32 ``|u|`` (mean over channels), resampled likewise; ``None``
            for models without the hallucination head.
        expert_weights: ``(N,)`` router weights (sum 1, top-K non-zero); empty for models without a router.
        image: ``(H, W)`` float32 in ``[0, 1]``: the input as read (colour converted to luma), for overlays.
        source: the file path, if the input was a file.
        warnings: everything the caller should know (weak prompt match, task suggested from DICOM
            tags, undefined threshold).
    """

    score: float
    is_anomalous: bool
    threshold: float
    task: str
    prompt: str
    prompt_similarity: float
    anomaly_map: np.ndarray
    hallucination_map: np.ndarray | None
    expert_weights: np.ndarray
    image: np.ndarray
    source: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """``anomalous``, ``normal``, or ``undetermined`` (no threshold for the task)."""
        if math.isnan(self.threshold):
            return "undetermined"
        return "anomalous" if self.is_anomalous else "normal"

    def top_experts(self, k: int = 2) -> list[tuple[int, float]]:
        """The ``k`` experts with the largest weights, as ``(expert index, weight)``, largest first."""
        order = np.argsort(-self.expert_weights, kind="stable")[:k]
        return [(int(i), float(self.expert_weights[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary without the big arrays (``nan`` thresholds become ``None``)."""
        return {
            "source": self.source,
            "task": self.task,
            "prompt": self.prompt,
            "prompt_similarity": self.prompt_similarity,
            "score": self.score,
            "threshold": None if math.isnan(self.threshold) else self.threshold,
            "is_anomalous": self.is_anomalous,
            "decision": self.decision,
            "expert_weights": [float(w) for w in self.expert_weights],
            "top_experts": [{"expert": i, "weight": w} for i, w in self.top_experts()],
            "image_size": {"height": int(self.image.shape[0]), "width": int(self.image.shape[1])},
            "warnings": list(self.warnings),
        }
