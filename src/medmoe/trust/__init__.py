"""Answers a clinician can trust: conformal p-values with a stated false-positive rate, the task an
image resembles (prompt–image mismatch) and out-of-scope input (:mod:`~medmoe.trust.calibration`,
numpy only), from a scope head that is part of every trained network (:mod:`medmoe.trust.scope`,
torch; import it from there)."""

from medmoe.trust.calibration import DEFAULT_FPR, Assessment, TrustCalibration, assess, fit_calibration
from medmoe.trust.conformal import decision_threshold, p_values, smallest_p

__all__ = ["DEFAULT_FPR", "Assessment", "TrustCalibration", "assess", "decision_threshold", "fit_calibration",
           "p_values", "smallest_p"]
