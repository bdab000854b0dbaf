"""The numpy record of a model's outputs, shared by inference, the Python API's backends and the ONNX
export. Imports neither torch nor onnxruntime (the onnx backend runs without torch)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

DEPLOYED_OUTPUTS: tuple[str, ...] = ("score", "anomaly_map", "hallucination_map", "router_weights", "scope_distances")
"""What a deployed model answers, in this order: the ONNX graph's output names and the first fields of
:class:`OutputArrays`."""


@dataclass
class OutputArrays:
    """A model's outputs for ``n`` images as numpy arrays on the CPU (``N`` experts, ``C`` channels,
    ``R × R`` pixels, ``T`` tasks): what :func:`medmoe.engine.inference.predict` returns and what the
    torch and ONNX backends of :class:`~medmoe.api.Detector` answer.

    Attributes:
        score: image anomaly scores ``(n,)``.
        anomaly_map: ``(n, R, R)``; ``None`` where maps were not kept (scoring only).
        hallucination_map: the raw hallucination map ``u`` ``(n, C, R, R)`` (``C = 1`` for feature
            models); ``None`` without the hallucination head or maps.
        router_weights: ``(n, N)``; ``None`` without a router.
        scope_distances: ``(n, T)`` squared distances to each task's normals
            (:class:`~medmoe.trust.scope.ScopeHead`); ``None`` without a scope head.
        features: the image features ``v`` ``(n, latent_dim)``; ``None`` where not collected (the
            ONNX graph does not output them).
        reconstruction: ``(n, C, R, R)`` in the [0, 1] image range, for models that reconstruct pixels
            and only where maps were kept.
    """

    score: np.ndarray
    anomaly_map: np.ndarray | None = None
    hallucination_map: np.ndarray | None = None
    router_weights: np.ndarray | None = None
    scope_distances: np.ndarray | None = None
    features: np.ndarray | None = None
    reconstruction: np.ndarray | None = None

    def required(self, name: str) -> np.ndarray:
        """The field ``name``; ``ValueError`` where this record lacks it (maps not kept, no router …)."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"these outputs have no {name}")
        return value

    @classmethod
    def concatenate(cls, parts: list[OutputArrays]) -> OutputArrays:
        """The records of consecutive batches as one (a field is kept where every part has it)."""
        if not parts:
            return cls(score=np.zeros(0, np.float32))
        joined = {}
        for item in fields(cls):
            values = [getattr(part, item.name) for part in parts]
            joined[item.name] = None if any(v is None for v in values) else np.concatenate(values)
        score = joined.pop("score")
        assert score is not None  # every part has a score
        return cls(score, **joined)
