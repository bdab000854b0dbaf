"""What a result may claim: p-values, the image's resemblance to each task, out-of-scope input.

A :class:`TrustCalibration` is fitted when a model is trained (on the validation normals, or on the
training normals when there are none, which the ``source`` field says) and stored in the checkpoint
and the ONNX sidecar as plain JSON; with the scope head's distances
(:class:`~medmoe.trust.scope.ScopeHead`) it answers, in numpy only:

- the conformal p-value of a score and the score threshold of a false-positive rate
  (:mod:`medmoe.trust.conformal`);
- which task an image resembles: the task with the smallest *normalised* scope distance (the
  Mahalanobis distance divided by that task's median over its own validation normals, so tasks of
  different spread compare);
- whether the image is out of scope (a caveat beside the decision, never a replacement for it):
  its normalised distance to every task exceeds
  :attr:`TrustCalibration.scope_limit`, the :data:`SCOPE_QUANTILE` of all validation normals'
  normalised distances to their own task (so about 1 % of in-scope normals are flagged). Each
  validation normal is normalised leave-one-out, by the median of its task's *other* normals, as a
  new image is: normalising a task's few normals by their own median pulls them towards 1 (two
  normals give exactly 1 ± δ) and would make the limit of a small validation set too tight.

Both rest on few numbers when a task has few calibration normals (its typical distance is the median
of ``n`` of them) or all tasks together have fewer than a hundred (a 99 % limit then falls on the
largest of them): :meth:`TrustCalibration.scope_caveat` says so, training and ``medmoe calibrate`` log
it, and an out-of-scope verdict whose nearest task is such a one carries it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medmoe.errors import CheckpointError
from medmoe.trust.conformal import check_fpr, decision_threshold, p_values, smallest_p

SCOPE_QUANTILE = 0.99
"""Quantile of the in-scope validation normals' normalised distances that bounds the scope."""

SCOPE_MIN_NORMALS = 10
"""Fewest calibration normals of a task whose typical scope distance (a median) is called well founded."""

SCOPE_MIN_POOLED = 100
"""Fewest calibration normals in all on which a :data:`SCOPE_QUANTILE` limit is well founded."""

DEFAULT_FPR = 0.05
"""Default false-positive rate ``α`` of decisions (``--fpr``)."""


@dataclass(frozen=True)
class TrustCalibration:
    """Per-task calibration data of one model.

    Attributes:
        scores: per task id, the calibration normals' anomaly scores (sorted).
        scope_scale: per task id, the median scope distance of its calibration normals to it.
        scope_limit: normalised scope distance above which an image is out of a task's scope.
        source: ``validation normals`` or ``training normals (no validation data)``.
    """

    scores: dict[str, list[float]]
    scope_scale: dict[str, float]
    scope_limit: float
    source: str

    def p_value(self, task: str, score: float) -> float:
        """The conformal p-value of ``score`` among ``task``'s calibration scores (``nan``: none)."""
        reference = self.scores.get(task, [])
        return float(p_values(np.asarray(reference), np.asarray([score]))[0]) if reference else float("nan")

    def smallest_p(self, task: str) -> float:
        """The smallest p-value ``task`` can give (``nan`` without calibration scores)."""
        n = len(self.scores.get(task, []))
        return smallest_p(n) if n else float("nan")

    def threshold(self, task: str, fpr: float) -> tuple[float, float]:
        """``(threshold, level)`` of :func:`~medmoe.trust.conformal.decision_threshold` for ``task``
        (``(nan, fpr)`` without calibration scores)."""
        reference = self.scores.get(task, [])
        if not reference:
            return float("nan"), fpr
        return decision_threshold(np.asarray(reference), fpr)

    def normalised(self, task_ids: list[str], distances: np.ndarray) -> np.ndarray:
        """Scope distances ``(..., T)`` (squared, as the head outputs them; tasks in ``task_ids``
        order) → normalised distances of the same shape."""
        scale = np.asarray([self.scope_scale[t] for t in task_ids])
        return np.sqrt(np.maximum(distances, 0.0)) / np.maximum(scale, 1e-12)

    def scope_caveat(self, task: str) -> str:
        """Why out-of-scope verdicts near ``task`` rest on few numbers (``""``: they do not): fewer than
        :data:`SCOPE_MIN_NORMALS` calibration normals of ``task``, or fewer than :data:`SCOPE_MIN_POOLED`
        in all."""
        n, total = len(self.scores.get(task, [])), sum(len(s) for s in self.scores.values())
        reasons = []
        if n < SCOPE_MIN_NORMALS:
            reasons.append(f"the typical distance of {task!r} rests on {n} calibration normals")
        if total < SCOPE_MIN_POOLED:
            reasons.append(f"the limit on {total} in all")
        if not reasons:
            return ""
        return (f"{' and '.join(reasons)}, so in-scope images are flagged more often than 1 %; calibrate on more "
                f"validation normals: {SCOPE_MIN_NORMALS}+ per task, {SCOPE_MIN_POOLED}+ in all")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, stored in ``model.json`` and the ONNX sidecar."""
        return {"scores": self.scores, "scope_scale": self.scope_scale, "scope_limit": self.scope_limit,
                "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: object) -> TrustCalibration:
        """Inverse of :meth:`to_dict`; ``source`` names the file in errors."""
        try:
            return cls(scores={str(k): sorted(float(x) for x in v) for k, v in data["scores"].items()},
                       scope_scale={str(k): float(v) for k, v in data["scope_scale"].items()},
                       scope_limit=float(data["scope_limit"]), source=str(data["source"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"the calibration in '{source}' is invalid ({exc!r}); train or "
                                  "calibrate the model again") from exc


def fit_calibration(task_ids: list[str], scores: np.ndarray, task_index: np.ndarray, distances: np.ndarray,
                    source: str, extra_index: np.ndarray | None = None,
                    extra_distances: np.ndarray | None = None) -> TrustCalibration:
    """Calibration from the calibration normals' scores ``(n,)``, task indices ``(n,)`` and squared
    scope distances ``(n, T)``. A task without calibration normals gets no scores (no p-values) and
    its scope scale from ``extra_distances (m, T)`` of its ``extra_index (m,)`` rows (its training
    normals), which do not enter the scope limit."""
    rows = np.arange(len(task_index))
    own = np.sqrt(np.maximum(distances[rows, task_index], 0.0))
    scale = {}
    for i, task in enumerate(task_ids):
        if np.any(task_index == i):
            scale[task] = float(np.median(own[task_index == i]))
        elif extra_index is not None and extra_distances is not None and np.any(extra_index == i):
            scale[task] = float(np.median(np.sqrt(np.maximum(extra_distances[extra_index == i, i], 0.0))))
        else:
            raise ValueError(f"no normals of task {task!r} to calibrate its scope on")
    normalised = _leave_one_out_normalised(own, task_index)
    limit = float(np.quantile(normalised, SCOPE_QUANTILE)) if len(normalised) else float("inf")
    return TrustCalibration(
        scores={t: sorted(float(s) for s in scores[task_index == i]) for i, t in enumerate(task_ids)
                if np.any(task_index == i)},
        scope_scale=scale, scope_limit=limit, source=source)


def _leave_one_out_normalised(own: np.ndarray, task_index: np.ndarray) -> np.ndarray:
    """Each calibration normal's distance to its task ``own (n,)`` divided by the median of the
    other normals of its task (``1`` for a task's only normal, which has no others)."""
    normalised = np.ones_like(own)
    for task in np.unique(task_index):
        rows = np.flatnonzero(task_index == task)
        if len(rows) < 2:
            continue
        for j, row in enumerate(rows):
            normalised[row] = own[row] / max(float(np.median(np.delete(own[rows], j))), 1e-12)
    return normalised


@dataclass(frozen=True)
class Assessment:
    """What one result may claim (see the module docstring).

    Attributes:
        p_value: conformal p-value of the score among the task's calibration normals (``nan``: none).
        fpr: the false-positive rate the decision controls (the asked ``α``, or the task's smallest
            reachable p when ``α`` is below it).
        threshold: the score threshold equivalent to ``p ≤ fpr`` (``nan``: no calibration scores).
        resembles: the task the image itself looks most like (``None``: out of scope or no scope data).
        prompt_mismatch: the image resembles another trained task than the one asked for.
        out_of_scope: the image resembles none of the trained tasks' normals: a caveat on the decision
            (the score is still compared with the asked task's normals), not a replacement for it.
        scope_distance: the image's distance to the nearest task's normals, in multiples of their
            typical distance (``nan``: no scope data).
        scope_limit: out of scope above this distance (``nan``: no scope data).
        explanation: the p-value in words (empty without calibration scores).
        notes: warnings for the user, one sentence each.
    """

    p_value: float
    fpr: float
    threshold: float
    resembles: str | None
    prompt_mismatch: bool
    out_of_scope: bool
    explanation: str
    notes: tuple[str, ...]
    scope_distance: float = math.nan
    scope_limit: float = math.nan


def assess(calibration: TrustCalibration, task_ids: list[str], task: str, score: float, fpr: float,
           distances: np.ndarray | None) -> Assessment:
    """The trust fields of one result: ``task`` asked for, its ``score``, the asked ``fpr`` and the
    image's squared scope distances ``(T,)`` (``None``: a model without a scope head)."""
    check_fpr(fpr)
    notes = []
    threshold, level = calibration.threshold(task, fpr)
    if level > fpr:
        n = len(calibration.scores[task])
        notes.append(f"the asked false-positive rate {fpr:g} is below the smallest p-value task {task!r} can "
                     f"give ({level:.3f}, from {n} calibration normals): deciding at {level:.3f} instead")
    resembles, mismatch, out, distance = None, False, False, math.nan
    if distances is not None:
        normalised = calibration.normalised(task_ids, np.asarray(distances, dtype=np.float64))
        nearest = int(np.argmin(normalised))
        distance = float(normalised[nearest])
        out = bool(distance > calibration.scope_limit)
        if out:
            caveat = calibration.scope_caveat(task_ids[nearest])
            notes.append(f"out of scope: the image resembles none of the trained tasks' normal images (nearest: "
                         f"{task_ids[nearest]!r}, {distance:.1f} × its typical distance, limit "
                         f"{calibration.scope_limit:.1f}); the decision compares it with {task!r} normals it does "
                         f"not resemble, so check that it is a {task!r} image"
                         + (f" (but {caveat})" if caveat else ""))
        else:
            resembles = task_ids[nearest]
            mismatch = resembles != task
            if mismatch:
                notes.append(f"the image looks like {resembles!r}, not {task!r} as asked: check the prompt or "
                             f"task (the result is still for {task!r})")
    p = calibration.p_value(task, score)
    return Assessment(p_value=p, fpr=level, threshold=threshold, resembles=resembles, prompt_mismatch=mismatch,
                      out_of_scope=out, explanation=_in_words(calibration, task, score, p, level),
                      notes=tuple(notes), scope_distance=distance,
                      scope_limit=math.nan if distances is None else float(calibration.scope_limit))


def deployed_threshold(calibration: TrustCalibration | None, thresholds: Mapping[str, float], task: str,
                       fpr: float) -> tuple[float, float]:
    """``(threshold, level)`` of the decision a deployed model makes for ``task`` at the false-positive rate
    ``fpr``: the conformal threshold of ``calibration`` and the rate it reaches, or, for models trained
    before calibration existed, the task's percentile threshold from ``thresholds`` and ``nan``.
    ``medmoe detect``, the REST service, ``evaluate`` and ``train``'s summary all decide by this."""
    if calibration is not None:
        return calibration.threshold(task, fpr)
    return float(thresholds.get(task, math.nan)), math.nan


def _in_words(calibration: TrustCalibration, task: str, score: float, p: float, level: float) -> str:
    """``more unusual than 97 of 100 normal 'brain_mri' calibration scans (p = 0.04 ≤ 0.05: flagged)``."""
    reference = calibration.scores.get(task, [])
    if not reference:
        return ""
    lower = int(np.sum(np.asarray(reference) < score))
    verdict = f"p = {p:.3g} ≤ {level:g}: flagged" if p <= level else f"p = {p:.3g} > {level:g}: not flagged"
    return (f"more unusual than {lower} of {len(reference)} normal {task!r} {calibration.source.split(' (')[0]} "
            f"({verdict} at a false-positive rate of {100 * level:.3g} %)")
