"""The contract every registered model keeps: a frozen preparation step, a trainable forward, its loss.

Training, validation, threshold fitting and evaluation call these three and nothing
architecture-specific:

- :meth:`AnomalyModel.prepare` — the frozen part (a pretrained trunk), identity for pixel models.
  Its output depends on nothing trainable, so the engine computes it once per image and caches it
  (:mod:`medmoe.engine.features`); :meth:`frozen_identity` names it for the cache key.
- :meth:`AnomalyModel.forward_prepared` — the trainable part on prepared inputs; ``forward(x, e)``
  is ``forward_prepared(prepare(x), e)``; ``forward`` rounds a frozen part's output to
  :data:`FEATURE_DTYPE`, the precision the cache stores, so ``model(x)`` scores an image as the engine
  does from cached features (training, calibration, evaluation). The API's torch and ONNX backends
  (:class:`~medmoe.api.torch_backend.ScreenedModel`) call ``prepare`` and ``forward_prepared``
  themselves and do not round: rounding there makes the ONNX and torch maps differ by a float16 step
  where the two runtimes' trunk outputs straddle a rounding boundary.
- :meth:`AnomalyModel.loss` — the model's own training objective on its outputs (Eq. 6 for the
  pixel models, in the model's value range), aux terms included.
- :meth:`AnomalyModel.fit_data` — what the model takes from the prepared training normals before
  gradient training (feature statistics, memories); a model without trainable parameters is
  trained by this call alone.
- :meth:`AnomalyModel.grow` and :meth:`AnomalyModel.held_out_scores` — for architectures registered with
  ``adds_tasks`` (``medmoe add-task``): the model grown by one task from its normals, every earlier
  output unchanged, and those normals' scores as if unseen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmoe.errors import ConfigError
from medmoe.model.config import ModelConfig
from medmoe.model.losses import LossParts, total_loss
from medmoe.model.output import ModelOutput
from medmoe.model.scoring import to_model_range

FEATURE_DTYPE = torch.float16
"""The precision of a frozen part's output, in the feature cache and in :meth:`AnomalyModel.forward`."""


class AnomalyModel(nn.Module):
    """Base class of registered models (see the module docstring). Subclasses set ``self.config``
    and implement :meth:`forward_prepared`."""

    config: ModelConfig

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen preprocessing of images ``(B, C, R, R)`` in [0, 1]; identity here."""
        return x

    def frozen_identity(self) -> str | None:
        """A string identifying :meth:`prepare` for the feature cache; ``None``: nothing to cache."""
        return None

    def trains_by_gradient(self) -> bool:
        """Whether the model has trainable parameters (memory models are fitted by :meth:`fit_data` alone)."""
        return any(p.requires_grad for p in self.parameters())

    def fit_data(self, inputs: torch.Tensor, task_ids: torch.Tensor, task_embeddings: torch.Tensor | None,
                 seed: int = 0) -> None:
        """Take statistics or memories from the training normals' prepared ``inputs`` and task indices
        ``(n,)`` (``task_embeddings (T, text_dim)``: the tasks' prompt embeddings, if the model uses
        prompts); nothing here."""

    def forward_prepared(self, inputs: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """The trainable part on :meth:`prepare`'s output."""
        raise NotImplementedError

    def check_growth(self, expert: str) -> None:
        """Raise :class:`~medmoe.errors.ConfigError` if :meth:`grow` would refuse ``expert`` on this model
        (called before any work; architectures registered with ``adds_tasks`` override it)."""
        raise ConfigError(f"{self.config.architecture} does not add tasks")

    def grow(self, prompt_embeddings: torch.Tensor, normals: torch.Tensor, *, expert: str, seed: int,
             lr: float) -> tuple[AnomalyModel, ModelConfig]:
        """A new model that also screens one more task, from its prepared ``normals``, and its architecture;
        ``prompt_embeddings (T + 1, D)`` are every task's, the new one last. Every existing task's outputs
        must stay the same numbers. Architectures registered with ``adds_tasks`` implement it.

        Args:
            expert: ``expert`` (the task gets an expert of its own) or ``route`` (weights over the existing ones).
            seed: seeds what the growth draws.
            lr: learning rate of what it trains.
        """
        raise NotImplementedError(f"{self.config.architecture} does not add tasks")

    def held_out_scores(self, normals: torch.Tensor, text_embedding: torch.Tensor) -> np.ndarray | None:
        """The scores of the ``normals`` the last :meth:`grow` was given, each as if the model had not seen
        it (``None``: the model cannot say, and calibration falls back on in-sample scores)."""
        return None

    def forward(self, x: torch.Tensor, text_embedding: torch.Tensor | None = None, *,
                prepared: bool = False) -> ModelOutput:
        """Score images ``(B, C, R, R)`` in [0, 1]: ``forward_prepared(prepare(x), text_embedding)``;
        with ``prepared=True`` ``x`` already is :meth:`prepare`'s output (the trainer's cached
        features; a keyword so that ``DistributedDataParallel`` can pass it through)."""
        if prepared or self.frozen_identity() is None:
            return self.forward_prepared(x if prepared else self.prepare(x), text_embedding)
        features = self.prepare(x)
        return self.forward_prepared(features.to(FEATURE_DTYPE).to(features.dtype), text_embedding)

    def loss(self, out: ModelOutput, inputs: torch.Tensor, task_ids: torch.Tensor,
             alpha: float, beta: float) -> LossParts:
        """Eq. 6 in the model's value range (``alpha·L_rn + beta·L_re``) plus the output's ``aux_loss``.

        Args:
            out: :meth:`forward_prepared`'s ``ModelOutput`` for ``inputs``.
            inputs: the prepared inputs (here the images in [0, 1]).
            task_ids: ``(B,)`` task indices (the routing target).
            alpha: weight of the routing loss.
            beta: weight of the reconstruction loss.
        """
        if out.x_hat is None:
            raise NotImplementedError(f"{type(self).__name__} reconstructs no pixels: it needs a loss of its own")
        target = to_model_range(inputs, self.config.value_range)
        parts = total_loss(target, out.x_hat, out.u, out.router_logits, task_ids, alpha, beta)
        if out.aux_loss is None:
            return parts
        return LossParts(total=parts.total + out.aux_loss, routing=parts.routing,
                         reconstruction=parts.reconstruction)
