"""The result of running a :class:`~medmoe.api.detector.Detector` on one image, and its one flat record.

Every field a user sees of a result — a ``results.csv`` column, a REST response field, a line of the web
page — is declared once, in :class:`ResultRecord`: its name, type and description. ``results.csv``
takes :func:`medmoe.api.results_csv.csv_columns`, the REST schema is built from the record's fields
(:func:`medmoe.serve.app.response_model`), and the page lists every field of the response. Adding an
output field is two edits: declare it in :class:`ResultRecord` and fill it in :meth:`DetectionResult.record`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DECISIONS = ("anomalous", "normal", "undetermined", "unsure_prompt")
"""The values of :attr:`DetectionResult.decision`."""


def described(text: str) -> Any:
    """A record field's description (read by :func:`field_docs`, the CSV documentation and the REST schema)."""
    return field(metadata={"doc": text})


@dataclass(frozen=True)
class ResultRecord:
    """One result as plain values: what ``results.csv``, the REST API and the web page show (no arrays).

    The field order is the ``results.csv`` column order; each field's description is in its metadata.
    """

    source: str | None = described("The input: its absolute path (detect), the uploaded file's name (REST), or null.")
    frame: int | None = described("The frame (DICOM, TIFF page) scored, for files with several; else null.")
    slice: int | None = described("The axial slice (NIfTI) scored, for volumes; else null.")
    task: str = described("The task whose calibration and threshold apply.")
    prompt: str = described("The prompt the model was given (the task's trained prompt when a task was chosen).")
    prompt_similarity: float = described("Cosine similarity of the prompt to the task's trained prompt.")
    prompt_trusted: bool = described("The task is known: a task id, DICOM tags, or a prompt that clearly names a "
                                "trained task. False: decision is unsure_prompt.")
    score: float = described("Image anomaly score (higher: more anomalous).")
    threshold: float | None = described("Score threshold at the false-positive rate fpr (p ≤ fpr ⇔ score > "
                                   "threshold); null: none.")
    p_value: float | None = described("Share of the task's calibration normals at least as unusual (conformal "
                                 "p-value); null for uncalibrated models.")
    fpr: float | None = described("The false-positive rate on normals the decision controls.")
    decision: str = described("anomalous or normal at the false-positive rate fpr; undetermined (no threshold); "
                         "unsure_prompt (the prompt names no trained task: pass a task). Never replaced by "
                         "the scope verdict, which stands beside it.")
    is_anomalous: bool = described("decision == 'anomalous'.")
    resembles: str | None = described("The trained task the image itself looks like (null: none, or no scope head).")
    prompt_mismatch: bool | None = described("The image looks like another trained task than the one asked for.")
    out_of_scope: bool | None = described("The image resembles no trained task's normal images: a caveat on the "
                                     "decision (check the image is what the task covers), not a replacement.")
    scope_distance: float | None = described("The image's distance to the nearest task's normals, in multiples of "
                                        "their typical distance.")
    scope_limit: float | None = described("Out of scope above this scope_distance.")
    top_experts: str = described("The experts the router weighted most, numbered from 1: 'E2 0.612, E4 0.388'.")
    expert_weights: list[float] = described("Router weight of each expert E1 … EN (top-K non-zero, sum 1).")
    p_value_text: str = described("The p-value in words.")
    height: int = described("The input image's height in pixels.")
    width: int = described("The input image's width in pixels.")
    model: str = described("The model that answered: a packaged model's name and version "
                                     "('medmoe-universal 1.0.0'), else its run folder's name.")
    model_sha256: str = described("The first 12 hex digits of the SHA-256 of its weights.")
    warnings: list[str] = described("Everything the caller should know, one sentence each.")

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-safe dict, in field order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def field_docs(record: type[ResultRecord] = ResultRecord) -> dict[str, str]:
    """Each field's description, by name, in column order."""
    return {f.name: f.metadata["doc"] for f in dataclasses.fields(record)}


TOP_EXPERTS = 2
"""How many experts ``top_experts`` names."""


@dataclass
class DetectionResult:
    """Score, decision and maps for one image (``H × W``: the input image's own size).

    Attributes:
        score: image anomaly score (higher = more anomalous).
        above_threshold: ``score > threshold`` (``False`` when the threshold is undefined).
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
        image: ``(H, W)`` gray or ``(H, W, 3)`` colour float32 in ``[0, 1]``: the input as read, for overlays.
        source: the file path, if the input was a file.
        frame, slice: the frame or slice of the file that was scored (``None``: the file has one).
        prompt_trusted: the task is known (a task id, DICOM tags, or a prompt that clearly names a
            trained task); otherwise the decision is ``unsure_prompt``.
        warnings: everything the caller should know (weak prompt match, task suggested from DICOM
            tags, undefined threshold, mismatch, out of scope, an unreachable false-positive rate).
        p_value: conformal p-value of the score among the task's calibration normals: the share of
            normal scans at least as unusual (``nan``: an uncalibrated model).
        fpr: the false-positive rate on normals the decision controls (``nan``: uncalibrated).
        p_value_text: the p-value in words.
        resembles: the trained task the image itself looks like (``None``: out of scope, or a model
            without a scope head).
        prompt_mismatch: the image looks like another trained task than the one asked for.
        out_of_scope: the image resembles no trained task's normal images (a caveat beside the decision).
        scope_distance: the image's distance to the nearest task's normals in multiples of their
            typical distance (``nan``: no scope head).
        scope_limit: out of scope above this distance (``nan``: no scope head).
        model: the model that answered ("medmoe-universal 1.0.0" for a packaged model, else its name).
        model_sha256: the first 12 hex digits of its weights' SHA-256 (empty where unknown).
    """

    score: float
    above_threshold: bool
    threshold: float
    task: str
    prompt: str
    prompt_similarity: float
    anomaly_map: np.ndarray
    hallucination_map: np.ndarray | None
    expert_weights: np.ndarray
    image: np.ndarray
    source: str | None = None
    frame: int | None = None
    slice: int | None = None
    prompt_trusted: bool = True
    warnings: list[str] = field(default_factory=list)
    p_value: float = math.nan
    fpr: float = math.nan
    p_value_text: str = ""
    resembles: str | None = None
    prompt_mismatch: bool = False
    out_of_scope: bool = False
    scope_distance: float = math.nan
    scope_limit: float = math.nan
    model: str = ""
    model_sha256: str = ""

    @property
    def decision(self) -> str:
        """``anomalous`` or ``normal`` at the false-positive rate :attr:`fpr`; ``undetermined`` (no
        threshold for the task) or ``unsure_prompt`` (the prompt names no trained task). The scope and
        mismatch verdicts stand beside it (:attr:`out_of_scope`, :attr:`prompt_mismatch`)."""
        if math.isnan(self.threshold):
            return "undetermined"
        if not self.prompt_trusted:
            return "unsure_prompt"
        return "anomalous" if self.above_threshold else "normal"

    @property
    def is_anomalous(self) -> bool:
        """``decision == 'anomalous'``."""
        return self.decision == "anomalous"

    def top_experts(self, k: int = TOP_EXPERTS) -> list[tuple[int, float]]:
        """The ``k`` experts with the largest weights, as ``(expert number from 1, weight)``, largest first."""
        order = np.argsort(-self.expert_weights, kind="stable")[:k]
        return [(int(i) + 1, float(self.expert_weights[i])) for i in order]

    def record(self) -> ResultRecord:
        """The result as one flat :class:`ResultRecord` (``nan`` becomes ``None``; no arrays)."""
        calibrated = not math.isnan(self.p_value)
        scoped = not math.isnan(self.scope_distance)
        return ResultRecord(
            source=self.source, frame=self.frame, slice=self.slice, task=self.task, prompt=self.prompt,
            prompt_similarity=float(self.prompt_similarity), prompt_trusted=self.prompt_trusted,
            score=float(self.score), threshold=finite_or_none(self.threshold), p_value=finite_or_none(self.p_value),
            fpr=finite_or_none(self.fpr), decision=self.decision, is_anomalous=self.is_anomalous,
            resembles=self.resembles, prompt_mismatch=self.prompt_mismatch if calibrated else None,
            out_of_scope=self.out_of_scope if scoped else None, scope_distance=finite_or_none(self.scope_distance),
            scope_limit=finite_or_none(self.scope_limit),
            top_experts=", ".join(f"E{i} {w:.3f}" for i, w in self.top_experts()),
            expert_weights=[float(w) for w in self.expert_weights], p_value_text=self.p_value_text,
            height=int(self.image.shape[0]), width=int(self.image.shape[1]), model=self.model,
            model_sha256=self.model_sha256, warnings=list(self.warnings),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary without the big arrays: :meth:`record` as a dict."""
        return self.record().to_dict()


def finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` for ``nan`` (JSON has no NaN)."""
    return None if math.isnan(value) else float(value)
