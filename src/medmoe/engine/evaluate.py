"""Evaluation of a trained model on a manifest split, with the metrics of ``docs/DATA.md``.

Per task, three views of the same scores:

- ``primary``: every evaluated row except those flagged ``other_source`` (images from another
  source than the task's normals, a confound a detector can cheat on);
- ``dedup``: the primary rows minus those flagged ``dup_of_train`` (byte-identical to a training
  image);
- ``all_sources``: every row, reported only where ``other_source`` rows exist.

``f1_best``/``acc_best``/``threshold_best`` use the threshold that maximises F1 on the evaluated labels
(the paper's protocol, which peeks at the test labels); ``*_val`` use the threshold ``medmoe detect``
decides at for the false-positive rate ``fpr`` (the conformal threshold of the validation normals;
the percentile threshold for models trained before calibration existed). ``deployed`` adds what else
detect says of the same images (:class:`DeployedMetrics`): the rate it decided at, the false-positive
rate observed on the normals against it, and how often the out-of-scope and mismatch caveats fire on
normal and abnormal images.

The report writers and :func:`~medmoe.report.evaluation_report.evaluate_run` (collect → metrics → report →
figures, as the CLI, the demo and the benchmark run it) live in :mod:`medmoe.report.evaluation_report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmoe.data.dataset import Batch, ImageDataset
from medmoe.data.manifest import Manifest, Sample
from medmoe.engine.checkpoint import Checkpoint
from medmoe.engine.data import default_cache_dir
from medmoe.engine.features import prepared_inputs
from medmoe.engine.inference import predict, task_text_embeddings
from medmoe.engine.trust_fitting import scope_distances
from medmoe.errors import DatasetError
from medmoe.metrics import (
    ImageMetrics,
    PixelMetrics,
    bootstrap_intervals,
    image_metrics,
    mean_over_tasks,
    pixel_metrics,
    routing_accuracy,
)
from medmoe.model.registry import architecture
from medmoe.output_arrays import OutputArrays
from medmoe.trust import DEFAULT_FPR
from medmoe.trust.calibration import deployed_threshold

PROTOCOL = {
    "f1_best, acc_best, threshold_best": "threshold maximising F1 on the evaluated (test) labels — the "
                                         "paper's protocol; it peeks at test labels",
    "f1_val, acc_val, sensitivity_val, specificity_val": "at the threshold medmoe detect decides at for the "
                                                         "false-positive rate deployed.fpr, fitted on validation "
                                                         "normals only (deployable)",
    "deployed": "what medmoe detect says of these images: the rate decided at (level), the observed "
                "false-positive rate on normals, out-of-scope and mismatch rates on normals and abnormals",
    "dedup": "the same metrics without test rows byte-identical to a training/validation image",
    "all_sources": "including test rows from another source than the task's normals (source confound)",
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "primary": ("other_source",),
    "dedup": ("other_source", "dup_of_train"),
    "all_sources": (),
}


@dataclass
class EvaluationData:
    """The evaluated rows and the model's outputs on them.

    Attributes:
        samples: the manifest rows, in batch order.
        batch: their images, masks, labels and task indices.
        inputs: what the network reads of them (:func:`~medmoe.engine.features.prepared_inputs`: trunk
            features for feature models, from the cache; the images for pixel models).
        predictions: the outputs (scores, routing, features).
    """

    samples: list[Sample]
    batch: Batch
    inputs: torch.Tensor
    predictions: OutputArrays


def collect(checkpoint: Checkpoint, manifests: Sequence[Manifest], *, split: str = "test",
            batch_size: int = 64, cache_dir: Path | None = None, progress: bool = True) -> EvaluationData:
    """Load the split's images of the checkpoint's tasks and run the model on them."""
    entries = [(m, s) for m in manifests for s in m.select(split=split) if s.task in checkpoint.tasks]
    if not entries:
        raise DatasetError(f"no '{split}' images of the model's tasks ({', '.join(checkpoint.tasks.ids)}) "
                           "in the given manifests")
    dataset = ImageDataset(entries, checkpoint.tasks, resolution=checkpoint.config.model.resolution,
                           cache_dir=cache_dir or default_cache_dir(), with_masks=True,
                           channels=checkpoint.config.model.in_channels)
    batch = dataset.materialize(progress=progress)
    inputs = prepared_inputs(checkpoint.model, batch.images, cache_dir=cache_dir or default_cache_dir(),
                             batch_size=batch_size, progress=progress)
    text = task_text_embeddings(checkpoint.prompt_embeddings, batch.task_indices)
    preds = predict(checkpoint.model, inputs, text, batch_size=batch_size, prepared=True)
    return EvaluationData(samples=[s for _, s in entries], batch=batch, inputs=inputs, predictions=preds)


def maps_for(checkpoint: Checkpoint, data: EvaluationData, rows: np.ndarray, batch_size: int = 64) -> OutputArrays:
    """Recompute the given rows keeping anomaly maps, reconstructions and hallucination maps."""
    index = torch.from_numpy(rows)
    text = task_text_embeddings(checkpoint.prompt_embeddings, data.batch.task_indices[index])
    return predict(checkpoint.model, data.inputs[index], text, batch_size=batch_size, keep_maps=True, prepared=True)


def view_rows(data: EvaluationData, view: str = "primary") -> np.ndarray:
    """``(n,)`` bool: the evaluated rows in ``view`` (:data:`VARIANTS`: those without its excluded flags)."""
    excluded = set(VARIANTS[view])
    return np.array([not set(s.flags) & excluded for s in data.samples], dtype=bool)


@dataclass(frozen=True)
class DeployedMetrics:
    """What ``medmoe detect`` says of one task's evaluated images at the false-positive rate ``fpr``.

    Attributes:
        fpr: the false-positive rate asked for.
        level: the rate decided at (above ``fpr`` where the task's calibration normals cannot give so
            small a p-value); ``nan`` for models without calibration.
        threshold: the score threshold of that decision (``nan``: none).
        fpr_observed: the share of the evaluated normals decided anomalous: to set against ``level``.
        sensitivity: the share of the evaluated abnormal images decided anomalous.
        out_of_scope_normal, out_of_scope_abnormal: the shares flagged out of scope (``nan``: no scope head).
        mismatch_normal, mismatch_abnormal: the shares that look like another trained task (``nan``: likewise).
    """

    fpr: float
    level: float
    threshold: float
    fpr_observed: float
    sensitivity: float
    out_of_scope_normal: float
    out_of_scope_abnormal: float
    mismatch_normal: float
    mismatch_abnormal: float

    def to_dict(self) -> dict[str, float]:
        """The fields by name."""
        return dict(vars(self))


@dataclass(frozen=True)
class TaskMetrics:
    """One task's evaluation (see the module docstring for the views).

    Attributes:
        primary: every evaluated row but the other-source ones.
        dedup: the primary rows without those byte-identical to a training image.
        all_sources: every row; ``None`` where the task has no other-source rows (it equals primary).
        excluded: how many rows each flag (``other_source``, ``dup_of_train``) took out.
        routing_accuracy: share of images routed to their task's expert; ``None`` without a router
            with an expert per task.
        pixel: localisation on the rows with masks; ``None`` where no abnormal image has one.
        deployed: what ``medmoe detect`` decides on the primary rows.
        intervals: 95 % bootstrap confidence intervals of the primary view's metrics
            (:func:`~medmoe.metrics.bootstrap_intervals`), ``{metric: (low, high)}``.
    """

    primary: ImageMetrics
    dedup: ImageMetrics
    all_sources: ImageMetrics | None
    excluded: dict[str, int]
    routing_accuracy: float | None = None
    pixel: PixelMetrics | None = None
    deployed: DeployedMetrics | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The task's row of a per-task table: the primary view, routing accuracy and pixel metrics."""
        row = self.primary.to_dict()
        if self.routing_accuracy is not None:
            row["routing_accuracy"] = self.routing_accuracy
        return row | (self.pixel.to_dict() if self.pixel is not None else {})

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` form: the primary view's metrics flat, the other views nested."""
        out: dict[str, Any] = {**self.primary.to_dict(), "dedup": self.dedup.to_dict()}
        if self.all_sources is not None:
            out["all_sources"] = self.all_sources.to_dict()
        out["excluded"] = dict(self.excluded)
        if self.deployed is not None:
            out["deployed"] = self.deployed.to_dict()
        if self.intervals:
            out["ci95"] = {k: list(v) for k, v in self.intervals.items()}
        return out | {k: v for k, v in self.scalars().items() if k not in out}


@dataclass(frozen=True)
class RunMetrics:
    """A run's evaluation: per task, and the MEAN rows (:func:`~medmoe.metrics.mean_over_tasks`)."""

    tasks: dict[str, TaskMetrics]
    mean: dict[str, float]
    mean_dedup: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` form (with :data:`PROTOCOL`, what the thresholds mean)."""
        return {"tasks": {k: v.to_dict() for k, v in self.tasks.items()}, "mean": self.mean,
                "mean_dedup": self.mean_dedup, "protocol": PROTOCOL}


def compute_metrics(checkpoint: Checkpoint, data: EvaluationData, *, fpr: float = DEFAULT_FPR) -> RunMetrics:
    """Per-task and mean metrics (see the module docstring for the three views), the deployable ones at the
    false-positive rate ``fpr``."""
    labels = data.batch.labels.numpy()
    task_idx = data.batch.task_indices.numpy()
    flags = [set(s.flags) for s in data.samples]
    rows = {name: view_rows(data, name) for name in VARIANTS}
    resembles = _resemblance(checkpoint, data)
    paired = architecture(checkpoint.config.model.architecture).experts_per_task
    per_task: dict[str, TaskMetrics] = {}
    for t, task in enumerate(checkpoint.tasks):
        in_task = task_idx == t
        if not in_task.any():
            continue
        threshold, level = deployed_threshold(checkpoint.calibration, checkpoint.thresholds, task.id, fpr)
        deployed = _deployed(data.predictions.score[in_task & rows["primary"]], labels[in_task & rows["primary"]],
                             None if resembles is None else resembles[in_task & rows["primary"]], t, fpr, level,
                             threshold)
        threshold = None if math.isnan(threshold) else threshold
        views = {name: image_metrics(data.predictions.score[in_task & in_view], labels[in_task & in_view],
                                     threshold_val=threshold) for name, in_view in rows.items()}
        confounded = (in_task & rows["all_sources"]).sum() != (in_task & rows["primary"]).sum()
        routed = data.predictions.router_weights is not None and paired  # expert i is task i's
        per_task[task.id] = TaskMetrics(
            primary=views["primary"], dedup=views["dedup"], all_sources=views["all_sources"] if confounded else None,
            excluded={flag: int(sum(flag in f for f, i in zip(flags, in_task, strict=False) if i))
                      for flag in ("other_source", "dup_of_train")},
            routing_accuracy=routing_accuracy(data.predictions.required("router_weights")[in_task], task_idx[in_task])
            if routed else None,
            pixel=_pixel_view(checkpoint, data, in_task, rows["primary"]),
            deployed=deployed,
            intervals=bootstrap_intervals(data.predictions.score[in_task & rows["primary"]],
                                          labels[in_task & rows["primary"]], threshold_val=threshold),
        )
    return RunMetrics(tasks=per_task, mean=mean_over_tasks({k: v.scalars() for k, v in per_task.items()}),
                      mean_dedup=mean_over_tasks({k: v.dedup.to_dict() for k, v in per_task.items()}))


def _resemblance(checkpoint: Checkpoint, data: EvaluationData) -> np.ndarray | None:
    """``(n,)`` the task index each evaluated image resembles, ``-1`` out of scope; ``None`` without a scope head."""
    if checkpoint.scope is None or checkpoint.calibration is None:
        return None
    distances = scope_distances(checkpoint.model, checkpoint.config.model, checkpoint.scope, data.inputs)
    normalised = checkpoint.calibration.normalised(checkpoint.tasks.ids, distances)
    nearest = np.argmin(normalised, axis=1)
    inside = normalised[np.arange(len(nearest)), nearest] <= checkpoint.calibration.scope_limit
    return np.where(inside, nearest, -1)


def _deployed(scores: np.ndarray, labels: np.ndarray, resembles: np.ndarray | None, task: int, fpr: float,
              level: float, threshold: float) -> DeployedMetrics:
    """:class:`DeployedMetrics` of one task's images (``scores``, ``labels`` and resembled tasks ``(n,)``)."""
    flagged = scores > threshold  # all False for a nan threshold: nothing is decided anomalous

    def share(mask: np.ndarray, label: int) -> float:
        chosen = labels == label
        return float(mask[chosen].mean()) if chosen.any() else math.nan

    outside = None if resembles is None else resembles == -1
    mismatch = None if resembles is None else (resembles != -1) & (resembles != task)
    nan = math.nan
    return DeployedMetrics(
        fpr=fpr, level=level, threshold=threshold, fpr_observed=share(flagged, 0), sensitivity=share(flagged, 1),
        out_of_scope_normal=nan if outside is None else share(outside, 0),
        out_of_scope_abnormal=nan if outside is None else share(outside, 1),
        mismatch_normal=nan if mismatch is None else share(mismatch, 0),
        mismatch_abnormal=nan if mismatch is None else share(mismatch, 1))


def _pixel_view(checkpoint: Checkpoint, data: EvaluationData, in_task: np.ndarray,
                primary: np.ndarray) -> PixelMetrics | None:
    """Pixel AUROC and best Dice over the task's abnormal images with masks plus its normals (primary rows)."""
    has_mask = data.batch.has_mask.numpy()
    labels = data.batch.labels.numpy()
    if not (in_task & has_mask & (labels == 1)).any():
        return None
    rows = np.flatnonzero(in_task & primary & (has_mask | (labels == 0)))
    preds = maps_for(checkpoint, data, rows)
    masks = data.batch.masks[torch.from_numpy(rows), 0].numpy() > 0.5
    return pixel_metrics(preds.required("anomaly_map"), masks)
