"""Growing a trained ``feature_moe`` by one task from a few normals (``AnomalyModel.grow``; ``medmoe add-task``).

:func:`grow` builds the network with one more :class:`~medmoe.model.feature.adapter.TaskAdapter`, carries
every trained weight and buffer over unchanged, and fits the adapter on the task's prepared normals:
its memory (a coreset of their patches, at least :data:`MEMORY_PATCHES`), then its expert or route on
Eq. 5 with everything else frozen, its temperature and retrieval scale on the same normals (retrieval
errors leave-one-image-out, as a new image meets the memory). :func:`held_out_scores` scores those
normals each against the memory without its own patches, for calibration from few normals.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from medmoe.errors import CheckpointError, ConfigError
from medmoe.model.config import ModelConfig
from medmoe.model.feature.adapter import TaskAdapter
from medmoe.model.feature.branch import update_temperature
from medmoe.model.feature.memory import coreset_indices, patch_errors, patches
from medmoe.model.feature.settings import ADDED_TASK_EXPERTS
from medmoe.model.losses import hallucination_aware_loss

if TYPE_CHECKING:
    from medmoe.model.feature.network import FeatureMoE

STEPS = 300
"""Optimisation steps of an adapter (batches of up to :data:`BATCH` drawn with replacement)."""
BATCH = 32
MEMORY_PATCHES = 4096
"""An added task keeps at least this many patches in its memory (or all it has): 1 % of a few
images' patches is too few to remember them."""


def grow(model: FeatureMoE, prompt_embeddings: torch.Tensor, normals: torch.Tensor, *, expert: str, seed: int,
         lr: float) -> tuple[FeatureMoE, ModelConfig]:
    """The network grown by one task (module docstring): its adapter fitted on ``normals`` (prepared trunk
    features ``(n, D, h, w)``); ``prompt_embeddings (T + 1, D)`` are every task's, the new one last.

    Raises:
        CheckpointError: the trained weights do not carry over (a corrupt or foreign checkpoint).
    """
    check_growth(model, expert)
    index = model.settings.added_tasks
    config = replace(model.config, settings=replace(model.settings, added_tasks=index + 1, added_task_expert=expert))
    grown = type(model)(config)
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not (k.startswith(f"added.{index}.") or k == "task_prompts") for k in missing):
        raise CheckpointError(f"the run's weights do not carry over to the extended model ({missing}, {unexpected})")
    grown.task_prompts = prompt_embeddings.float().clone()
    torch.manual_seed(seed)
    fit_adapter(grown, cast(TaskAdapter, grown.added[index]), normals, seed, lr=lr)
    return grown, config


def check_growth(model: FeatureMoE, expert: str) -> None:
    """Refuse an ``expert`` kind other than ``expert``/``route`` or than the model's earlier added tasks'."""
    if expert not in ADDED_TASK_EXPERTS:
        raise ConfigError(f"--expert must be one of {', '.join(ADDED_TASK_EXPERTS)}, not {expert!r}")
    before = model.settings.added_task_expert
    if model.settings.added_tasks and before != expert:
        raise ConfigError(f"this model's added tasks use {before!r}; add this one the same way")


def fit_adapter(model: FeatureMoE, adapter: TaskAdapter, features: torch.Tensor, seed: int, lr: float) -> None:
    """Fill the adapter's memory, train its expert or route on Eq. 5 (everything else frozen), and
    set its error temperature and retrieval scale on the training normals; the training image each memory
    patch came from is kept in ``adapter.memory_owner`` (for :func:`held_out_scores`)."""
    distance = model.settings.memory_distance
    points = patches(features, distance).flatten(0, 1)
    chosen = coreset_indices(points, seed=seed, minimum=MEMORY_PATCHES)
    adapter.memory = points[chosen].contiguous()
    owner = torch.as_tensor(chosen) // (features.shape[2] * features.shape[3])  # the image each patch came from
    model.requires_grad_(False)
    model.eval()
    adapter.requires_grad_(True)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    adapter.train()
    for _ in range(STEPS):
        rows = torch.randint(len(features), (min(BATCH, len(features)),), generator=generator)
        x = features[rows]
        z = model.standardise(x)
        with torch.no_grad():
            b, _ = model.encoder(z)
        _, u, e = adapter.maps(model, x, z, b)
        with torch.no_grad():  # the temperature follows the current errors (a few steps only)
            raw = e * adapter.error_scale
        update_temperature(adapter.error_scale, raw, model.settings.error_quantile, rate=1.0)
        e = raw / adapter.error_scale  # NB: detached, as it has always been: only u learns from Eq. 5 here
        loss = hallucination_aware_loss(e, u)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    adapter.eval()
    adapter.requires_grad_(False)
    with torch.no_grad():
        # the memory holds the training images' own patches: their retrieval errors are taken
        # leave-one-image-out, as a new image's would be
        retrieval = _leave_one_out_retrieval(features, adapter.memory, owner, distance) if model.retrieve else None
        if retrieval is not None and model.settings.feature_expert == "retrieve":
            raw = retrieval
        else:
            z = model.standardise(features)
            b, _ = model.encoder(z)
            _, _, e = adapter.maps(model, features, z, b)
            raw = e * adapter.error_scale
        update_temperature(adapter.error_scale, raw, model.settings.error_quantile, rate=1.0)
        if retrieval is not None and model.settings.feature_expert == "hybrid":
            adapter.retrieval_scale.copy_(retrieval.flatten().median().clamp_min(1e-8))
    adapter.memory_owner = owner


def _leave_one_out_retrieval(features: torch.Tensor, memory: torch.Tensor, owner: torch.Tensor,
                             distance: str) -> torch.Tensor:
    """Each training image's retrieval error ``(n, h, w)`` against the memory without its own patches
    (an image that is the memory's only source of patches is measured against all of it)."""
    return torch.cat([patch_errors(features[i:i + 1], [_memory_without(memory, owner, i)], distance)[:, 0]
                      for i in range(len(features))])


def _memory_without(memory: torch.Tensor, owner: torch.Tensor, image: int) -> torch.Tensor:
    """The memory rows not from training image ``image`` (all of them, if it is their only source)."""
    others = owner != image
    return memory[others] if bool(others.any()) else memory


@torch.no_grad()
def held_out_scores(model: FeatureMoE, adapter: TaskAdapter, embedding: torch.Tensor,
                    train_x: torch.Tensor) -> np.ndarray:
    """Each training normal's score (``embedding``: the task's prompt, ``(1, D)``) with the adapter's memory
    without that image's patches (:attr:`TaskAdapter.memory_owner`, set by :func:`fit_adapter`)."""
    memory, owner = adapter.memory, adapter.memory_owner
    was_training = model.training
    model.eval()
    scores = []
    try:
        for i in range(len(train_x)):
            adapter.memory = _memory_without(memory, owner, i)
            scores.append(float(model(train_x[i:i + 1], embedding, prepared=True).score[0]))
    finally:
        adapter.memory = memory
        model.train(was_training)
    return np.asarray(scores, dtype=np.float64)
