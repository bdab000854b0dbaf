"""Self-describing checkpoints: ``model.safetensors`` (weights) + ``model.json`` (everything else).

The JSON holds the run config, the task table with prompts, the text encoder's name, validation
thresholds, training info, the package version and the SHA-256 of the weights file, so a pair that
does not belong together is detected. The frozen prompt embeddings are stored next to the weights
(``prompt_embeddings``, row ``i`` = task ``i``), so inference on known prompts never runs the text
model. Both files are written atomically, weights first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from medmoe import __version__
from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.engine.config import RunConfig
from medmoe.errors import CheckpointError, ConfigError
from medmoe.model.base import AnomalyModel
from medmoe.model.registry import create_model
from medmoe.tasks import TaskRegistry
from medmoe.trust.calibration import TrustCalibration
from medmoe.trust.scope import SCOPE_PREFIX, ScopeHead
from medmoe.versioned import model_label, read_versioned_json, unreadable

FORMAT = "medmoe-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
EMBEDDINGS_KEY = "prompt_embeddings"
RELEASE_KEY = "release"
"""``model.json`` key of a packaged model's ``{"name", "version"}`` (written by ``medmoe package``)."""


@dataclass
class Checkpoint:
    """A loaded model with everything needed to use it.

    Attributes:
        model: the network, in eval mode.
        config: the run configuration it was trained with.
        tasks: the task table; task ``i`` is the model's task index ``i``.
        prompt_embeddings: ``(T, text_dim)`` frozen embeddings of the tasks' prompts, or ``None``
            for models that do not use prompts.
        thresholds: per task id, the deployable score threshold fitted on validation normals.
        info: training facts (epoch, validation loss, seed, timings, threshold rule …).
        path: the folder it was loaded from.
        scope: the scope head (distances of an image to each task's normals); ``None`` in
            checkpoints written before trust outputs existed.
        calibration: p-value and scope calibration; ``None`` likewise.
        release: a packaged model's ``{"name", "version"}`` (``medmoe package``); empty for a run folder.
        weights_sha256: the SHA-256 of the weights file it was loaded from (empty for one not loaded from disk).
        medmoe_version: the medmoe version that wrote it (empty for one not loaded from disk).
    """

    model: AnomalyModel
    config: RunConfig
    tasks: TaskRegistry
    prompt_embeddings: torch.Tensor | None
    thresholds: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    scope: ScopeHead | None = None
    calibration: TrustCalibration | None = None
    release: dict[str, str] = field(default_factory=dict)
    weights_sha256: str = ""
    medmoe_version: str = ""

    @property
    def text_encoder(self) -> str:
        """Spec of the text encoder the model was trained with."""
        return self.config.train.text_encoder

    @property
    def name(self) -> str:
        """A packaged model's release name, else its folder's name."""
        return self.release.get("name") or (self.path.resolve().name if self.path is not None else "")

    @property
    def version(self) -> str:
        """A packaged model's release version; empty for a run folder."""
        return self.release.get("version", "")

    @property
    def label(self) -> str:
        """The model's name as results carry it (:func:`~medmoe.versioned.model_label`)."""
        return model_label(self.name, self.version)


def save_checkpoint(directory: str | Path, *, model: nn.Module, config: RunConfig, tasks: TaskRegistry,
                    prompt_embeddings: torch.Tensor | None, thresholds: dict[str, float],
                    info: dict[str, Any] | None = None, scope: ScopeHead | None = None,
                    calibration: TrustCalibration | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` atomically (``scope`` and
    ``calibration``: the trust outputs' head and calibration, see the module docstring).

    Returns:
        The path of ``model.json``.
    """
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    if prompt_embeddings is not None:
        tensors[EMBEDDINGS_KEY] = prompt_embeddings.detach().cpu().float().contiguous()
    if scope is not None:
        tensors.update({SCOPE_PREFIX + k: v.detach().cpu().contiguous() for k, v in scope.state_dict().items()})
    blob = save_safetensors(tensors, metadata={"format": FORMAT})
    atomic_write_bytes(directory / WEIGHTS_NAME, blob)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medmoe_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights": {"file": WEIGHTS_NAME, "sha256": hashlib.sha256(blob).hexdigest()},
        "config": config.to_dict(),
        "tasks": tasks.to_list(),
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "info": info or {},
    }
    if calibration is not None:
        meta["trust"] = calibration.to_dict()
    path = directory / META_NAME
    atomic_write_text(path, json.dumps(meta, indent=2, allow_nan=True) + "\n")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint from a run folder (or its ``model.json``).

    Raises:
        CheckpointError: missing files, a file that is not a medmoe checkpoint, a newer format,
            weights that do not belong to the JSON, or weights that do not fit the architecture.
    """
    meta_path = Path(path)
    if meta_path.is_dir():
        meta_path = meta_path / META_NAME
    if not meta_path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}': expected a run folder with {META_NAME} and "
                              f"{WEIGHTS_NAME} (written by 'medmoe train')")
    meta = read_versioned_json(meta_path, fmt=FORMAT, version=FORMAT_VERSION, what="medmoe checkpoint")
    weights_path = meta_path.parent / meta["weights"]["file"]
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights '{weights_path}' are missing")
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["weights"]["sha256"]:
        raise CheckpointError(f"'{weights_path}' does not match '{meta_path}' (SHA-256 differs): "
                              "the weights were replaced or are corrupt")
    try:
        config = RunConfig.from_dict(meta["config"], stored=True)
        tasks = TaskRegistry.from_list(meta["tasks"])
        tensors = load_safetensors(blob)
    except (ConfigError, SafetensorError, KeyError) as exc:
        raise CheckpointError(unreadable(meta_path, str(meta.get("medmoe_version", "")),
                                         f"is an invalid checkpoint: {exc}", "train the model again")) from exc
    embeddings = tensors.pop(EMBEDDINGS_KEY, None)
    scope_tensors = {k[len(SCOPE_PREFIX):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(SCOPE_PREFIX)]}
    scope = ScopeHead.from_state(scope_tensors) if scope_tensors else None
    calibration = TrustCalibration.from_dict(meta["trust"], meta_path) if "trust" in meta else None
    model = create_model(config.model)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(unreadable(weights_path, str(meta.get("medmoe_version", "")),
                                         f"does not fit the architecture in '{meta_path}': "
                                         f"{str(exc).splitlines()[0]}", "train the model again")) from exc
    model.to(map_location).eval()
    return Checkpoint(model=model, config=config, tasks=tasks, prompt_embeddings=embeddings,
                      thresholds=dict(meta.get("thresholds", {})), info=dict(meta.get("info", {})),
                      path=meta_path.parent, scope=scope, calibration=calibration,
                      release=dict(meta.get(RELEASE_KEY) or {}), weights_sha256=meta["weights"]["sha256"],
                      medmoe_version=str(meta.get("medmoe_version", "")))


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)
