"""Conformal p-values of anomaly scores and the threshold that controls the false-positive rate.

Given the scores ``v_1 … v_n`` of a task's validation normals, the p-value of a new score ``s`` is

    p(s) = (1 + #{i : v_i ≥ s}) / (n + 1)

and an image is called anomalous when ``p(s) ≤ α``. If the new normal image and the validation
normals are exchangeable (drawn the same way: same scanner, protocol, site and preprocessing),
``P(p(s) ≤ α) ≤ α`` for a normal image, so ``α`` bounds the false-positive rate on normals; nothing
is assumed about the score's distribution. What breaks it is whatever makes the new normals differ
from the validation normals: another scanner or hospital, another patient population, a changed
intensity window. The smallest p-value a task can give is ``1 / (n + 1)`` (9 validation normals:
0.1), so an ``α`` below it cannot be reached; :func:`decision_threshold` then decides at that
smallest p and says so.

``p(s) ≤ α`` is the same decision as ``s > t`` for the score threshold ``t`` = the ``m``-th largest
validation score, ``m = ⌊α (n + 1)⌋``, so results carry both, and they always agree.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-9
"""Slack for ``α (n + 1)`` landing a rounding error below an integer (0.05 · 100 = 5.000…1)."""


def check_fpr(fpr: float) -> None:
    """Raise ``ValueError`` unless ``fpr`` (a false-positive rate, ``α``) is in ``(0, 1)``."""
    if not 0 < fpr < 1:
        raise ValueError(f"the false-positive rate (fpr) must be in (0, 1), not {fpr}")


def p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values ``(1 + #{v ≥ s}) / (n + 1)`` of ``scores`` against ``calibration`` ``(n,)``."""
    reference = np.sort(np.asarray(calibration, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64)
    at_least = len(reference) - np.searchsorted(reference, scores, side="left")
    return (1.0 + at_least) / (len(reference) + 1.0)


def smallest_p(n: int) -> float:
    """The smallest p-value ``n`` calibration scores can give: ``1 / (n + 1)``."""
    return 1.0 / (n + 1.0)


def decision_threshold(calibration: np.ndarray, alpha: float) -> tuple[float, float]:
    """The score threshold equivalent to ``p ≤ α`` and the level actually used.

    Args:
        calibration: ``(n,)`` validation-normal scores, ``n ≥ 1``.
        alpha: the false-positive rate asked for, in ``(0, 1)``.

    Returns:
        ``(threshold, level)``: a score ``s`` is anomalous iff ``s > threshold`` iff
        ``p(s) ≤ level``; ``level`` is ``alpha`` or, when ``alpha < 1 / (n + 1)``, that smallest
        reachable p (the threshold is then the largest validation score).
    """
    check_fpr(alpha)
    reference = np.sort(np.asarray(calibration, dtype=np.float64))[::-1]
    if len(reference) == 0:
        raise ValueError("no calibration scores")
    level = max(alpha, smallest_p(len(reference)))
    rank = min(max(math.floor(level * (len(reference) + 1) + _EPS), 1), len(reference))
    return float(reference[rank - 1]), level
