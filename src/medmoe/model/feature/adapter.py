"""Tasks added to a trained ``feature_moe`` from a few normal scans, leaving every trained weight alone.

``medmoe add-task`` (:mod:`medmoe.engine.add_task`) gives the new task a :class:`TaskAdapter`:

- ``expert``: a decoder of its own (one more expert of the bank's shape, reading the frozen shared
  bottleneck), or ``route``: a learned softmax over the existing experts (a router row for the task);
- in both, a memory of its own normals' patches for the retrieval error (the existing experts'
  memories hold the other tasks), and its own error temperature and retrieval scale.

Which branch scores an image is decided in the network from the prompt embedding: the task whose
stored prompt embedding is nearest (cosine) — an added task's rows take the adapter's map, every other
row keeps the model's own map, selected with ``torch.where``, so old tasks' scores and maps are the
same numbers as before the add (tested bit for bit).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.feature.branch import score_branch
from medmoe.model.feature.memory import patch_errors, resize_to_stored
from medmoe.model.feature.settings import FeatureMoESettings


class TaskAdapter(nn.Module):
    """What one added task trains and remembers (module docstring).

    Args:
        config: the model's architecture (``added_task_expert``, ``feature_expert``, widths …).
        channels: trunk feature channels ``D``.
        bank: a factory of one expert of the model's bank shape (for ``expert``).
    """

    memory: torch.Tensor
    memory_owner: torch.Tensor
    error_scale: torch.Tensor
    retrieval_scale: torch.Tensor

    def __init__(self, config: ModelConfig, channels: int, bank: nn.Module | None) -> None:
        super().__init__()
        self.config = config
        self.settings = config.settings_as(FeatureMoESettings)
        self.bank = bank
        self.dropout = nn.Dropout(self.settings.feature_dropout)
        self.route_logits = nn.Parameter(torch.zeros(config.num_experts)) if bank is None else None
        self.register_buffer("memory", torch.zeros(0, channels))
        # the training image each memory patch came from: known right after the adapter is fitted, not saved
        self.register_buffer("memory_owner", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("error_scale", torch.ones(()))
        self.register_buffer("retrieval_scale", torch.ones(()))

    def route(self, like: torch.Tensor) -> torch.Tensor:
        """Weights over the model's experts ``(B, N)`` (``route``): softmax of the task's logits, one row
        per row of ``like (B, …)`` (broadcast, so an ONNX export keeps the batch dynamic)."""
        assert self.route_logits is not None
        ones = torch.ones_like(like.flatten(1)[:, :1])  # (B, 1)
        return ones * torch.softmax(self.route_logits, dim=0)[None]

    def retrieval_error(self, inputs: torch.Tensor) -> torch.Tensor:
        """Distance of each location's patch of ``inputs (B, D, h, w)`` to the task's memory: ``(B, 1, h, w)``
        (:func:`~medmoe.model.feature.memory.patch_errors`)."""
        return patch_errors(inputs, [self.memory], self.settings.memory_distance)

    def maps(self, model: Any, inputs: torch.Tensor, z: torch.Tensor,
             bottleneck: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(anomaly map, u, e)`` on the feature grid ``(B, 1, h, w)`` for trunk features ``inputs``,
        their standardised ``z`` and the model's bottleneck (``e``: the tempered error, Eq. 5's input)."""
        if self.bank is not None:
            out = self.bank(self.dropout(bottleneck))[:, 0]
        else:
            out = model.experts.mix(bottleneck, self.route(z)) if model.experts is not None else None
        branch = score_branch(self.config, out, z, lambda: self.retrieval_error(inputs), model.distance,
                              self.error_scale, self.retrieval_scale, training=self.training, track_temperature=False)
        return branch.anomaly_map, branch.u, branch.error

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        resize_to_stored(self, state_dict, prefix, ("memory",))
        super()._load_from_state_dict(state_dict, prefix, *args)

