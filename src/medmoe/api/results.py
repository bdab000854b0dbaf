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
        score: image anomaly score (higher = more anomalous).
        is_anomalous: ``score > threshold``, the same as ``p_value ≤ fpr`` for calibrated models
            (``False`` when the threshold is undefined, see ``warnings``).
        threshold: the score threshold of the matched task at the false-positive rate ``fpr`` (the
            conformal threshold, :mod:`medmoe.trust.conformal`); for models trained before trust
            outputs existed, the task's percentile threshold; ``nan`` if the model has none.
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
            tags, undefined threshold, mismatch, out of scope, an unreachable false-positive rate).
        p_value: conformal p-value of the score among the task's calibration normals: the share of
            normal scans at least as unusual (``nan``: an uncalibrated model).
        fpr: the false-positive rate on normals the decision controls (``nan``: uncalibrated).
        p_value_text: the p-value in words.
        resembles: the trained task the image itself looks like (``None``: out of scope, or a model
            without a scope head).
        prompt_mismatch: the image looks like another trained task than the one asked for.
        out_of_scope: the image resembles no trained task's normal images: the score is not meaningful.
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
    p_value: float = math.nan
    fpr: float = math.nan
    p_value_text: str = ""
    resembles: str | None = None
    prompt_mismatch: bool = False
    out_of_scope: bool = False

    @property
    def decision(self) -> str:
        """``anomalous``, ``normal``, ``out_of_scope`` (the score is not meaningful) or
        ``undetermined`` (no threshold for the task)."""
        if self.out_of_scope:
            return "out_of_scope"
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
            "threshold": finite_or_none(self.threshold),
            "is_anomalous": self.is_anomalous,
            "decision": self.decision,
            "p_value": finite_or_none(self.p_value),
            "fpr": finite_or_none(self.fpr),
            "p_value_text": self.p_value_text,
            "resembles": self.resembles,
            "prompt_mismatch": self.prompt_mismatch,
            "out_of_scope": self.out_of_scope,
            "expert_weights": [float(w) for w in self.expert_weights],
            "top_experts": [{"expert": i, "weight": w} for i, w in self.top_experts()],
            "image_size": {"height": int(self.image.shape[0]), "width": int(self.image.shape[1])},
            "warnings": list(self.warnings),
        }


def finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` for ``nan`` (JSON has no NaN)."""
    return None if math.isnan(value) else float(value)
