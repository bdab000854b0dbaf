"""The paper's prompt-driven mixture of hallucination-aware experts over a frozen pretrained trunk.

``x → FrozenTrunk → F (B, D, h, w)``, standardised per channel with statistics of the training
normals ``z = (F − m) / s``. The rest is the paper's model (§3) moved into feature space:

- **shared encoder** ``z → b (B, E, h/2, w/2)`` (1×1 conv, 3×3 stride-2 conv), the bottleneck every
  expert decodes; in training ``b`` passes through dropout (Dinomaly's noisy bottleneck: it keeps the
  decoders from learning the identity, so they reconstruct normal patterns, not anomalies);
  ``v = FC(mean-pool(b))`` is the image feature the router sees;
- **prompt encoder and router** as in the pixel model: ``s = TopK(softmax([v, tau] W + b))``, with
  the routing loss (Eq. 4) pairing task ``i`` with expert ``i``;
- **N hallucination-aware experts**, one grouped-convolution bank: each decodes ``b`` into
  ``mu_k (D, h, w)`` (the reconstructed feature map) and ``sigma_k (1, h, w)``; ``mu = Σ s_k mu_k``,
  ``u = Σ s_k sigma_k``. With ``feature_expert: retrieve`` an expert's ``mu_k`` is instead each
  location's nearest patch in its memory of normal patches (3×3-aggregated trunk features of
  task ``k mod T``'s training normals, a 1 % greedy coreset as PatchCore keeps), and the mixed error is
  ``Σ s_k d(z, mu_k)``; the experts still predict ``sigma_k`` from ``b``, so the hallucination map is a
  learned allowance for where normal patches sit far from every remembered one (boundaries);
- ``feature_expert: hybrid`` does both: the experts reconstruct (trained as above), and at inference
  each location's retrieval error, divided by its median on training normals, is averaged with the
  hallucination-discounted reconstruction error. The memory has nothing to learn, so training skips
  its search (the costliest part of a step). Reconstruction and retrieval fail on different tasks
  (``benchmarks/results/feature-design.md``), which is why the two are combined;
- **error** per location ``e = d(z, mu) / T`` with ``d`` the mean squared error over channels
  (``feature_error: mse``) or ``1 − cos`` (``cosine``), and ``T`` a temperature: the running
  ``error_quantile`` of ``d`` on training normals (a buffer updated like batch-norm statistics, fixed
  in eval). Eq. 5's optimum is ``u = 0`` wherever ``e ≤ 1`` and ``u² = ln e`` above, so without ``T``
  (errors of a good reconstruction are far below 1) the hallucination map could never switch on; with
  ``T`` at the median, half of the normal locations are where the experts are allowed to hallucinate;
- **Eq. 5** ``mean(e·exp(−u²) + u²)`` (plain ``mean(e)`` without the hallucination head), **Eq. 6**
  ``alpha·L_rn + beta·L_re``;
- **anomaly map** ``e·exp(−u²)`` upsampled (bilinear) to the image (smoothed with ``map_sigma``);
  **score** its mean (§3.5) or,
  with ``score_top_fraction = q > 0``, the mean of its largest ``q`` share (small lesions vanish in a
  full mean).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.feature.adapter import TaskAdapter
from medmoe.model.feature.branch import score_branch
from medmoe.model.feature.experts import FeatureEncoder, FeatureExpertBank
from medmoe.model.feature.grow import check_growth, held_out_scores
from medmoe.model.feature.grow import grow as grow_network
from medmoe.model.feature.memory import coreset_indices, gaussian_blur, patch_errors, patches, resize_to_stored
from medmoe.model.feature.settings import FeatureMoESettings
from medmoe.model.feature.trunk import TrunkModel
from medmoe.model.losses import LossParts, hallucination_aware_loss, routing_loss
from medmoe.model.output import ModelOutput
from medmoe.model.prompt import PromptEncoder, nearest_task
from medmoe.model.registry import register_model
from medmoe.model.router import Router, router_input

HYBRID_SCALE_IMAGES = 64
"""Training normals per task whose retrieval errors set the hybrid's retrieval scale."""


def top_fraction_mean(amap: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the largest ``fraction`` of each map's values (all of them for ``fraction`` 0 or 1).

    Shapes: ``(B, 1, H, W)`` → ``(B,)``.
    """
    flat = amap.flatten(1)
    if fraction <= 0 or fraction >= 1:
        return flat.mean(dim=1)
    k = max(1, round(fraction * int(flat.shape[1])))  # a constant when traced for ONNX (fixed resolution)
    return flat.topk(k, dim=1).values.mean(dim=1)


@register_model("feature_moe", experts_per_task=True, adds_tasks=True, settings=FeatureMoESettings,
                train_defaults={"selection": "last"})  # its temperature-normalised loss cannot rank epochs
class FeatureMoE(TrunkModel):
    """Prompt-driven hallucination-aware experts on frozen trunk features (module docstring).

    Args:
        config: architecture (``trunk``, ``trunk_stages``, the paper's fields and
            :class:`~medmoe.model.feature.settings.FeatureMoESettings`).
        pretrained: load the trunk's ImageNet weights (``False`` for shape-only tests).
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    error_scale: torch.Tensor
    retrieval_scale: torch.Tensor
    memory: torch.Tensor
    memory_counts: torch.Tensor
    task_prompts: torch.Tensor
    settings: FeatureMoESettings
    experts: FeatureExpertBank | None
    added: nn.ModuleList

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__(config, pretrained)
        self.settings = settings = config.settings_as(FeatureMoESettings)
        d, e = self.trunk.channels, settings.feature_width
        self.register_buffer("feature_mean", torch.zeros(d))
        self.register_buffer("feature_std", torch.ones(d))
        self.register_buffer("error_scale", torch.ones(()))
        self.register_buffer("retrieval_scale", torch.ones(()))
        self.encoder = FeatureEncoder(d, e, config.latent_dim, settings.feature_dropout)
        self.prompt_encoder = PromptEncoder(config) if config.prompt else None
        router_in = config.latent_dim + (config.prompt_dim if config.prompt else 0)
        self.router = Router(router_in, config.num_experts, config.top_k)
        self.retrieve = settings.feature_expert in ("retrieve", "hybrid")
        decoded = 0 if settings.feature_expert == "retrieve" else d
        self.experts = (FeatureExpertBank(config.num_experts, e, max(e // 2, 8), decoded, config.hallucination)
                        if decoded or config.hallucination else None)
        self.register_buffer("memory", torch.zeros(0, d))
        self.register_buffer("memory_counts", torch.zeros(config.num_experts, dtype=torch.long))
        # tasks added after training (medmoe add-task): an adapter each, chosen by the nearest stored prompt
        own_expert = settings.added_task_expert == "expert" and (decoded or config.hallucination)
        self.added = nn.ModuleList(
            TaskAdapter(config, d, FeatureExpertBank(1, e, max(e // 2, 8), decoded, config.hallucination)
                        if own_expert else None) for _ in range(settings.added_tasks))
        if settings.added_tasks:
            self.register_buffer("task_prompts", torch.zeros(0, config.text_dim))

    @torch.no_grad()
    def fit_data(self, inputs: torch.Tensor, task_ids: torch.Tensor, task_embeddings: torch.Tensor | None,
                 seed: int = 0) -> None:
        """Per-channel standardisation from the training normals' features ``(n, D, h, w)`` and, for
        retrieval experts, each expert's memory (expert ``k``: task ``k mod T``)."""
        self.feature_mean.copy_(inputs.mean(dim=(0, 2, 3)))
        self.feature_std.copy_(inputs.std(dim=(0, 2, 3)).clamp_min(1e-6))
        if not self.retrieve:
            return
        n_tasks = int(task_ids.max()) + 1
        banks = []
        for k in range(self.config.num_experts):
            points = patches(inputs[task_ids == k % n_tasks], self.settings.memory_distance).flatten(0, 1)
            banks.append(points[coreset_indices(points, seed=seed + k)])
        self.memory = torch.cat(banks).contiguous()
        self.memory_counts = torch.tensor([len(b) for b in banks], dtype=torch.long)
        if self.settings.feature_expert == "hybrid":  # the retrieval error's scale: its training-normal median
            rows = torch.cat([torch.nonzero(task_ids == t).flatten()[:HYBRID_SCALE_IMAGES] for t in range(n_tasks)])
            errors = torch.cat([self.retrieval_errors(inputs[rows[i:i + 32]]) for i in range(0, len(rows), 32)])
            own = errors[torch.arange(len(rows)), task_ids[rows]]  # each image against its own task's expert
            self.retrieval_scale.copy_(own.flatten().median().clamp_min(1e-8))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """``(F − m) / s`` per channel, ``(B, D, h, w)``."""
        return (features - self.feature_mean.view(1, -1, 1, 1)) / self.feature_std.view(1, -1, 1, 1)

    def retrieval_errors(self, features: torch.Tensor) -> torch.Tensor:
        """Each expert's error ``(B, N, h, w)``: the distance of every location's patch of the trunk
        features ``(B, D, h, w)`` to its nearest patch in the expert's memory
        (:func:`~medmoe.model.feature.memory.patch_errors`). Patches are taken from the trunk's own
        features, not the standardised ones, as PatchCore does (standardised channels lost 2.6
        validation AUROC: ``benchmarks/results/feature-design.md``)."""
        return patch_errors(features, self.memory.split(self.memory_counts.tolist()), self.settings.memory_distance)

    def distance(self, z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Per-location error ``(B, 1, h, w)`` of a reconstruction ``mu`` of ``z`` (both ``(B, D, h, w)``)."""
        if self.settings.feature_error == "cosine":
            return 1.0 - F.cosine_similarity(z, mu, dim=1).unsqueeze(1)
        return (z - mu).square().mean(dim=1, keepdim=True)

    def forward_prepared(self, inputs: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        """Score trunk features ``(B, D, h, w)``; the map comes back at the image resolution."""
        z = self.standardise(inputs)
        b, v = self.encoder(z)
        logits, weights = self.router(self.router_input(v, text_embedding))
        mixed = self.experts.mix(b, weights) if self.experts is not None else None
        branch = score_branch(
            self.config, mixed, z, lambda: torch.einsum("bn,bnhw->bhw", weights, self.retrieval_errors(inputs))
            .unsqueeze(1), self.distance, self.error_scale, self.retrieval_scale, training=self.training,
            track_temperature=self.training)
        amap, u, e = branch.anomaly_map, branch.u, branch.error
        if len(self.added) and text_embedding is not None:
            amap, u, weights = self._added_tasks(inputs, z, b, text_embedding, amap, u, weights)
        size = self.config.resolution
        up = F.interpolate(amap, size=(size, size), mode="bilinear", align_corners=False)
        if self.settings.map_sigma > 0:
            up = gaussian_blur(up, self.settings.map_sigma)
        u_up = None if u is None else F.interpolate(u, size=(size, size), mode="bilinear", align_corners=False)
        return ModelOutput(x_hat=None, u=u_up, anomaly_map=up,
                           score=top_fraction_mean(up, self.settings.score_top_fraction),
                           router_weights=weights, router_logits=logits, features=v,
                           reconstruction_loss=hallucination_aware_loss(e, u))

    def _added_tasks(self, inputs: torch.Tensor, z: torch.Tensor, b: torch.Tensor, text_embedding: torch.Tensor,
                     amap: torch.Tensor, u: torch.Tensor | None,
                     weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Rows whose prompt is nearest an added task's take its adapter's map (:mod:`medmoe.model.feature.adapter`);
        every other row keeps ``amap``/``u`` as they are. Router weights gain one column per added task
        (its own expert's weight, or the route over the existing experts)."""
        n_own = self.task_prompts.shape[0] - len(self.added)
        task = nearest_task(text_embedding, self.task_prompts)
        weights = F.pad(weights, (0, len(self.added)))
        for j, adapter in enumerate(self.added):
            rows = (task == n_own + j).view(-1, 1, 1, 1)
            new_map, new_u, _ = adapter.maps(self, inputs, z, b)
            amap = torch.where(rows, new_map, amap)
            if u is not None and new_u is not None:
                u = torch.where(rows, new_u, u)
            if adapter.bank is not None:
                row_weights = F.one_hot(torch.full_like(task, self.config.num_experts + j), weights.shape[1])
            else:
                row_weights = F.pad(adapter.route(z), (0, len(self.added)))
            weights = torch.where(rows.view(-1, 1), row_weights.to(weights.dtype), weights)
        return amap, u, weights

    def check_growth(self, expert: str) -> None:
        """See :func:`medmoe.model.feature.grow.check_growth`."""
        check_growth(self, expert)

    def grow(self, prompt_embeddings: torch.Tensor, normals: torch.Tensor, *, expert: str, seed: int,
             lr: float) -> tuple[FeatureMoE, ModelConfig]:
        """A task adapter more (:func:`medmoe.model.feature.grow.grow`)."""
        return grow_network(self, prompt_embeddings, normals, expert=expert, seed=seed, lr=lr)

    def held_out_scores(self, normals: torch.Tensor, text_embedding: torch.Tensor) -> np.ndarray | None:
        """Leave-one-image-out scores of the last added task's normals, where the model retrieves
        (:func:`medmoe.model.feature.grow.held_out_scores`); ``None`` otherwise."""
        if not self.retrieve or not len(self.added):
            return None
        return held_out_scores(self, cast(TaskAdapter, self.added[-1]), text_embedding, normals)

    def router_input(self, v: torch.Tensor, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """What the router sees (:func:`~medmoe.model.router.router_input`)."""
        return router_input(v, self.prompt_encoder, text_embedding, self.config.router_norm)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        resize_to_stored(self, state_dict, prefix, ("memory", "task_prompts") if len(self.added) else ("memory",))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def loss(self, out: ModelOutput, inputs: torch.Tensor, task_ids: torch.Tensor,
             alpha: float, beta: float) -> LossParts:
        """Eq. 6 in feature space: ``alpha·L_rn + beta·`` Eq. 5 on the feature grid."""
        assert out.reconstruction_loss is not None and out.router_logits is not None
        rn = routing_loss(out.router_logits, task_ids)
        rec = out.reconstruction_loss
        return LossParts(total=alpha * rn + beta * rec, routing=rn.detach(), reconstruction=rec.detach())
