"""The peers a user would pick instead of a trained model: PatchCore and image-level 1-NN, on the same
frozen trunk features as ``feature_moe`` (no gradient training: "training" fills a memory of normal
features, stored in the checkpoint like weights, so detect, serve, evaluate and export run them as
they run every other architecture).

- :class:`PatchCore` (Roth et al. 2022, as anomalib implements it): each location's trunk feature,
  averaged over its 3×3 neighbourhood (local aggregation), is a patch; the memory bank is a greedy
  k-center coreset (``memory_coverage`` of the training patches, chosen on a random projection to 128
  dimensions, as anomalib does); a patch's anomaly is the distance to its nearest memory patch
  (euclidean as published, or ``memory_distance: cosine``: ``1 − cos``, stronger on every task's
  validation, ``benchmarks/results/patch-memory.md``); the image score is the maximum over patches, the
  map the patch distances upsampled and smoothed (Gaussian, σ = 4 px). ``model.prompt: true``: one bank
  per task, the task being the one whose prompt embedding is nearest to the given one (the user names
  the task, as for per-task PatchCore);
  ``model.prompt: false``: one universal bank over every task. ``memory_window: r`` makes it a
  position-aware patch kNN: every training patch kept, a patch compared only with those within ±r cells
  of its position (the SQUID/SimSID idea for aligned anatomy).
- :class:`FeatureNN`: the image's mean-pooled trunk feature, scored by its distance (``memory_distance``)
  to the nearest training image of its task (``model.prompt: true``).

Both score prepared inputs ``(B, D, h, w)`` (:meth:`medmoe.model.feature.trunk.FrozenTrunk.forward`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medmoe.errors import ConfigError
from medmoe.model.config import ArchitectureSettings, ModelConfig
from medmoe.model.feature.memory import (
    COVERAGE,
    FAR,
    check_distance,
    coreset_indices,
    gaussian_blur,
    nearest_distance,
    patches,
    resize_to_stored,
    windowed_nearest_distance,
)
from medmoe.model.feature.trunk import TrunkModel
from medmoe.model.losses import LossParts
from medmoe.model.output import ModelOutput
from medmoe.model.prompt import nearest_task
from medmoe.model.registry import register_model


@dataclass(frozen=True)
class MemorySettings(ArchitectureSettings):
    """What the memory peers read.

    Attributes:
        memory_distance: ``euclidean`` (as published) or ``cosine`` (:mod:`medmoe.model.feature.memory`).
    """

    memory_distance: str = "euclidean"

    def __post_init__(self) -> None:
        check_distance("memory_distance", self.memory_distance)


@dataclass(frozen=True)
class PatchCoreSettings(MemorySettings):
    """PatchCore's settings.

    Attributes:
        memory_coverage: share of each task's training patches the coreset keeps (1: every patch;
            anomalib's default 0.1 costs ``0.1·n²`` distance evaluations per task, hence 0.01 here).
        memory_window: ``-1``: a patch's neighbour may sit anywhere (PatchCore); ``r ≥ 0``: only within
            ``±r`` cells of the patch's own position in the training images (a position-aware patch kNN,
            for aligned anatomy; needs every patch, ``memory_coverage: 1``).
    """

    memory_coverage: float = COVERAGE
    memory_window: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.memory_coverage <= 1:
            raise ConfigError(f"memory_coverage must be in (0, 1], not {self.memory_coverage}")
        if self.memory_window < -1:
            raise ConfigError(f"memory_window must be -1 (anywhere) or a radius ≥ 0, not {self.memory_window}")
        if self.memory_window >= 0 and self.memory_coverage < 1:
            raise ConfigError("memory_window compares each patch with the training patches at its position, so "
                              "it keeps every patch: set model.memory_coverage=1")


class MemoryModel(TrunkModel):
    """What PatchCore and FeatureNN share: the trunk, a memory of normal features with the task of each
    row, and the prompt → task matching. Subclasses implement :meth:`entries` and :meth:`forward_prepared`.

    The memory's size is known only after :meth:`fit_data`; loading a checkpoint resizes the empty
    buffers to the stored ones first.
    """

    settings: MemorySettings
    settings_kind: type[MemorySettings] = MemorySettings

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__(config, pretrained)
        self.settings = config.settings_as(self.settings_kind)
        self.register_buffer("memory", torch.zeros(0, self.trunk.channels))
        self.register_buffer("memory_task", torch.zeros(0, dtype=torch.long))
        self.register_buffer("task_embeddings", torch.zeros(0, config.text_dim))

    def entries(self, features: torch.Tensor) -> torch.Tensor:
        """The memory entries of ``features (n, D, h, w)``: ``(n, k, D)``."""
        raise NotImplementedError

    def select(self, entries: torch.Tensor, seed: int) -> torch.Tensor:
        """Which of a task's ``entries (m, D)`` to keep (all of them here)."""
        return torch.arange(len(entries))

    @torch.no_grad()
    def fit_data(self, features: torch.Tensor, task_ids: torch.Tensor, task_embeddings: torch.Tensor | None,
                 seed: int = 0) -> None:
        """Fill the memory from training-normal features ``(n, D, h, w)`` with tasks ``(n,)``.

        Args:
            features: prepared inputs of the training normals.
            task_ids: their task indices.
            task_embeddings: ``(T, text_dim)`` prompt embeddings of the tasks (per-task memories), or
                ``None`` for one universal memory.
            seed: seeds the coreset selection.
        """
        groups = task_ids.unique().tolist() if self.config.prompt else [0]
        rows, tasks = [], []
        for task in groups:
            mine = features[task_ids == task] if self.config.prompt else features
            points = self.entries(mine).flatten(0, 1)
            kept = points[self.select(points, seed)]
            rows.append(kept)
            tasks.append(torch.full((len(kept),), task, dtype=torch.long))
        self.memory = torch.cat(rows).contiguous()
        self.memory_task = torch.cat(tasks)
        if self.config.prompt:
            if task_embeddings is None:
                raise ConfigError(f"{self.config.architecture} with model.prompt: true needs the tasks' prompts")
            self.task_embeddings = F.normalize(task_embeddings.float(), dim=1)

    def distance(self, euclidean: torch.Tensor) -> torch.Tensor:
        """The ``memory_distance`` from the euclidean distance between stored-form entries: itself, or
        ``1 − cos`` for unit-length entries (``‖a − b‖² / 2``)."""
        return euclidean.square() / 2 if self.settings.memory_distance == "cosine" else euclidean

    def prompt_task(self, text_embedding: torch.Tensor | None) -> torch.Tensor:
        """``(B,)``: the task whose prompt embedding is nearest each row's (``model.prompt: true``)."""
        if text_embedding is None:
            raise ValueError(f"{self.config.architecture} chooses its memory by prompt: pass text_embedding")
        return nearest_task(text_embedding, self.task_embeddings)

    def penalty(self, text_embedding: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, m)``: :data:`FAR` on memory rows of other tasks than the prompt's nearest task."""
        if not self.config.prompt:
            return None
        return (self.memory_task[None, :] != self.prompt_task(text_embedding)[:, None]).float() * FAR

    def loss(self, out: ModelOutput, inputs: torch.Tensor, task_ids: torch.Tensor,
             alpha: float, beta: float) -> LossParts:
        """Memory models have no loss: their training is :meth:`fit_data`."""
        raise NotImplementedError(f"{self.config.architecture} is fitted with fit_data, not by gradient")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        resize_to_stored(self, state_dict, prefix, ("memory", "memory_task", "task_embeddings"))
        super()._load_from_state_dict(state_dict, prefix, *args)


class PatchCore(MemoryModel):
    """PatchCore (see the module docstring); ``model.prompt`` chooses per-task or universal banks."""

    settings: PatchCoreSettings
    settings_kind = PatchCoreSettings

    def entries(self, features: torch.Tensor) -> torch.Tensor:
        return patches(features, self.settings.memory_distance)

    def select(self, entries: torch.Tensor, seed: int) -> torch.Tensor:
        return coreset_indices(entries, seed=seed, coverage=self.settings.memory_coverage)

    def forward_prepared(self, inputs: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """Score trunk features ``(B, D, h, w)``: max patch distance, smoothed distance map."""
        b, _, h, w = inputs.shape
        if self.settings.memory_window < 0:
            euclidean = nearest_distance(self.entries(inputs), self.memory, self.penalty(text_embedding))
        else:
            euclidean = self.windowed_distance(inputs, text_embedding)
        dist = self.distance(euclidean)  # (B, h·w)
        size = self.config.resolution
        maps = F.interpolate(dist.view(b, 1, h, w), size=(size, size), mode="bilinear", align_corners=False)
        return ModelOutput(x_hat=None, u=None, anomaly_map=gaussian_blur(maps, sigma=4.0),
                           score=dist.max(dim=1).values, router_weights=None, router_logits=None,
                           features=inputs.mean(dim=(2, 3)))

    def windowed_distance(self, inputs: torch.Tensor, text_embedding: torch.Tensor | None) -> torch.Tensor:
        """``memory_window ≥ 0``: each patch's euclidean distance ``(B, h·w)`` to its bank's training patches
        within the window (:func:`~medmoe.model.feature.memory.windowed_nearest_distance`). In eager mode each
        row searches its own bank only; traced for export, every bank is searched and each row keeps its own
        (a fixed graph)."""
        b, _, h, w = inputs.shape
        queries = self.entries(inputs).view(b, h, w, -1)
        # the banks (runs of one task in the memory) and their sizes: constants of an exported graph
        runs = [(task, len(list(rows))) for task, rows in itertools.groupby(self.memory_task.tolist())]
        if any(count % (h * w) for _, count in runs):
            raise ValueError(f"this memory holds patches of another grid than {h}×{w}: score at the resolution "
                             "it was fitted at")
        banks = [bank.view(-1, h, w, queries.shape[-1]) for bank in self.memory.split([count for _, count in runs])]
        radius = self.settings.memory_window
        if not self.config.prompt:
            return windowed_nearest_distance(queries, banks[0], radius).flatten(1)
        task = self.prompt_task(text_embedding)
        if torch.jit.is_tracing():
            distances = torch.stack([windowed_nearest_distance(queries, bank, radius) for bank in banks])
            mine = torch.tensor([t for t, _ in runs])[:, None] == task[None, :]  # (banks, B)
            return (distances * mine[..., None, None]).sum(dim=0).flatten(1)
        out = queries.new_zeros(b, h, w)
        for (bank_task, _), bank in zip(runs, banks, strict=True):
            rows = task == bank_task
            if bool(rows.any()):
                out[rows] = windowed_nearest_distance(queries[rows], bank, radius)
        return out.flatten(1)


class FeatureNN(MemoryModel):
    """Per-task 1-NN on the mean-pooled trunk feature (see the module docstring)."""

    def entries(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))[:, None, :]
        return F.normalize(pooled, dim=-1) if self.settings.memory_distance == "cosine" else pooled

    def forward_prepared(self, inputs: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """Score trunk features ``(B, D, h, w)``: distance of the pooled feature to its nearest neighbour
        (the map is that distance everywhere: an image-level method does not localise)."""
        b = inputs.shape[0]
        pooled = self.entries(inputs)  # (B, 1, D)
        score = self.distance(nearest_distance(pooled, self.memory, self.penalty(text_embedding)))[:, 0]
        size = self.config.resolution
        return ModelOutput(x_hat=None, u=None, anomaly_map=score.view(b, 1, 1, 1).expand(b, 1, size, size),
                           score=score, router_weights=None, router_logits=None, features=inputs.mean(dim=(2, 3)))


register_model("patchcore", fixes={"hallucination": False}, settings=PatchCoreSettings)(PatchCore)
register_model("feature_nn", fixes={"hallucination": False, "prompt": True}, settings=MemorySettings)(FeatureNN)
