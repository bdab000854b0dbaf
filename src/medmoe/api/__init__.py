"""The Python API: :class:`Detector` (load a model, score images), its results and prompt matching.

Importing this package does not import torch; :meth:`Detector.load` with ``backend="torch"`` does.
"""

from medmoe.api.detector import Detector
from medmoe.api.prompt_matching import MIN_SIMILARITY, PromptMatch, PromptWarning
from medmoe.api.results import DetectionResult

__all__ = ["MIN_SIMILARITY", "DetectionResult", "Detector", "PromptMatch", "PromptWarning"]
