"""What a :class:`~medmoe.api.detector.Detector` needs to know about a model, whatever runs it.

A *backend* runs the network on preprocessed arrays (:class:`Backend`); a :class:`ModelSpec` holds
everything else — tasks, prompt embeddings, thresholds, input size — as plain numpy/JSON, so the ONNX
backend can be used without torch. This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medmoe.errors import CheckpointError
from medmoe.output_arrays import OutputArrays
from medmoe.tasks import TaskRegistry
from medmoe.trust.calibration import TrustCalibration, deployed_threshold
from medmoe.versioned import model_label, unreadable


@dataclass(frozen=True)
class ModelSpec:
    """A trained model's metadata, independent of torch.

    Attributes:
        tasks: the task table; task ``i`` is the model's task index ``i``.
        prompt_embeddings: ``(T, D)`` float32 frozen embeddings of the tasks' prompts (row ``i`` =
            task ``i``), or ``None`` for models that do not route on prompts.
        thresholds: per task id, the deployable score threshold fitted on validation normals
            (``nan`` where the run had no validation normals of that task).
        resolution: input side ``R``.
        channels: input channels ``C``.
        text_encoder: spec of the frozen text encoder (``minilm``, ``clip:<path>``).
        uses_prompt: whether the network takes a text embedding.
        medmoe_version: the medmoe version that trained (saved) the model.
        info: training facts carried over from the checkpoint (threshold rule, epoch …).
        calibration: p-value and scope calibration (:mod:`medmoe.trust`); ``None`` for models
            trained before trust outputs existed.
        name: the model's name: a packaged model's release name, else its run folder's name (kept in an
            ONNX export).
        version: a packaged model's release version (``medmoe package``); empty for a run folder.
        weights_sha256: the SHA-256 of the trained weights (kept in an ONNX export; empty where unknown).
    """

    tasks: TaskRegistry
    prompt_embeddings: np.ndarray | None
    thresholds: dict[str, float]
    resolution: int
    channels: int
    text_encoder: str
    uses_prompt: bool
    medmoe_version: str
    info: dict[str, Any] = field(default_factory=dict)
    calibration: TrustCalibration | None = None
    name: str = ""
    weights_sha256: str = ""
    version: str = ""

    @property
    def label(self) -> str:
        """The name every result carries (:func:`~medmoe.versioned.model_label`)."""
        return model_label(self.name, self.version)

    def decision_threshold(self, task: str, fpr: float) -> float:
        """The score threshold a result of ``task`` is decided at for the false-positive rate ``fpr``: the
        conformal threshold of the calibration (:meth:`TrustCalibration.threshold`), or the percentile
        threshold of a model trained before calibration existed; ``nan``: none."""
        return deployed_threshold(self.calibration, self.thresholds, task, fpr)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the ONNX sidecar); round-trips through :meth:`from_dict`."""
        return {
            "tasks": self.tasks.to_list(),
            "prompt_embeddings": None if self.prompt_embeddings is None else self.prompt_embeddings.tolist(),
            "thresholds": {k: float(v) for k, v in self.thresholds.items()},
            "resolution": self.resolution,
            "channels": self.channels,
            "text_encoder": self.text_encoder,
            "uses_prompt": self.uses_prompt,
            "medmoe_version": self.medmoe_version,
            "info": self.info,
            "trust": None if self.calibration is None else self.calibration.to_dict(),
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path) -> ModelSpec:
        """Inverse of :meth:`to_dict`; ``source`` names the file in errors."""
        try:
            embeddings = data["prompt_embeddings"]
            spec = cls(
                tasks=TaskRegistry.from_list(data["tasks"]),
                prompt_embeddings=None if embeddings is None else np.asarray(embeddings, dtype=np.float32),
                thresholds={str(k): float(v) for k, v in data["thresholds"].items()},
                resolution=int(data["resolution"]),
                channels=int(data["channels"]),
                text_encoder=str(data["text_encoder"]),
                uses_prompt=bool(data["uses_prompt"]),
                medmoe_version=str(data["medmoe_version"]),
                info=dict(data.get("info") or {}),
                calibration=(None if data.get("trust") is None
                             else TrustCalibration.from_dict(data["trust"], source)),
                name=str(data.get("name") or Path(source).name.split(".")[0]),  # exports before names existed
                weights_sha256=str(data.get("weights_sha256") or ""),
                version=str(data.get("version") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(unreadable(Path(source), str(data.get("medmoe_version", "")),
                                             f"is incomplete or invalid model metadata ({exc!r})",
                                             "export the model again with 'medmoe export'")) from exc
        if spec.prompt_embeddings is not None and spec.prompt_embeddings.shape[0] != len(spec.tasks):
            raise CheckpointError(f"model metadata '{source}': {spec.prompt_embeddings.shape[0]} prompt "
                                  f"embeddings for {len(spec.tasks)} tasks")
        return spec


class Backend(Protocol):
    """Runs a trained network on preprocessed images.

    Attributes:
        name: ``torch`` or ``onnx``.
        spec: the model's metadata.
    """

    name: str
    spec: ModelSpec

    def run(self, images: np.ndarray, text_embeddings: np.ndarray | None) -> OutputArrays:
        """``images (B, C, R, R)`` float32 in [0, 1] and ``text_embeddings (B, D)`` float32 (``None``
        for prompt-free models) → :class:`OutputArrays`."""
        ...
