"""The PyTorch backend: a checkpoint from ``medmoe train`` run with torch."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch

from medmoe import __version__
from medmoe.api.spec import ModelSpec
from medmoe.engine.checkpoint import Checkpoint, load_checkpoint
from medmoe.errors import CheckpointError
from medmoe.model.base import AnomalyModel
from medmoe.model.output import ModelOutput, deployed_outputs, to_arrays
from medmoe.output_arrays import OutputArrays
from medmoe.trust.scope import ScopeHead, ScopeTrunk


class ScreenedModel(torch.nn.Module):
    """A model and its scope head run together: ``(images, text) → (ModelOutput, distances (B, T) | None)``.

    The trunk is computed once for feature models (the scope head reads the model's prepared features).
    """

    model: AnomalyModel

    def __init__(self, model: AnomalyModel, scope: ScopeHead | None) -> None:
        super().__init__()
        self.model = model
        self.scope = scope
        self._trunk = None if scope is None else ScopeTrunk(model, model.config)

    def forward(self, image: torch.Tensor,
                text_embedding: torch.Tensor | None = None) -> tuple[ModelOutput, torch.Tensor | None]:
        prepared = self.model.prepare(image)
        out = self.model.forward_prepared(prepared, text_embedding)
        if self.scope is None or self._trunk is None:
            return out, None
        return out, self.scope(self._trunk(image, prepared))


def checked_device(device: str) -> torch.device:
    """``device`` as a torch device, or a :class:`CheckpointError` saying why it cannot be used here."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"unknown device {device!r} ({exc}); use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r}: this PyTorch build has no CUDA or sees no GPU "
                              f"(torch {torch.__version__}); use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise CheckpointError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) are visible")
    return resolved


def spec_of(checkpoint: Checkpoint) -> ModelSpec:
    """The torch-free metadata of a loaded checkpoint."""
    embeddings = checkpoint.prompt_embeddings
    return ModelSpec(
        tasks=checkpoint.tasks,
        prompt_embeddings=None if embeddings is None else embeddings.float().cpu().numpy(),
        thresholds=dict(checkpoint.thresholds),
        resolution=checkpoint.config.model.resolution,
        channels=checkpoint.config.model.in_channels,
        text_encoder=checkpoint.text_encoder,
        uses_prompt=checkpoint.config.model.prompt,
        medmoe_version=checkpoint.medmoe_version or __version__,
        info=dict(checkpoint.info),
        calibration=checkpoint.calibration,
        name=checkpoint.name,
        weights_sha256=checkpoint.weights_sha256,
        version=checkpoint.version,
    )


class TorchBackend:
    """Runs a checkpoint's network with torch.

    Args:
        run_dir: a run folder (``model.json`` + ``model.safetensors``) or its ``model.json``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch's CPU threads, process-wide (``None``: leave torch's setting).
    """

    name = "torch"

    def __init__(self, run_dir: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = checked_device(device)
        self.checkpoint = load_checkpoint(run_dir, map_location=self.device)
        self.spec = spec_of(self.checkpoint)
        network = ScreenedModel(cast(AnomalyModel, self.checkpoint.model), self.checkpoint.scope)
        self.network = network.to(self.device).eval()

    @torch.no_grad()
    def run(self, images: np.ndarray, text_embeddings: np.ndarray | None) -> OutputArrays:
        """``images (B, C, R, R)``, ``text_embeddings (B, D)`` or ``None`` → :class:`OutputArrays`."""
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        e = None
        if self.spec.uses_prompt and text_embeddings is not None:
            e = torch.from_numpy(np.ascontiguousarray(text_embeddings, dtype=np.float32)).to(self.device)
        out, distances = self.network(x, e)
        return to_arrays(deployed_outputs(out, distances))
