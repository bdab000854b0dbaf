"""Evaluation of a trained model on a manifest split, with the metrics of ``docs/DATA.md``.

Per task, three views of the same scores:

- ``primary``: every evaluated row except those flagged ``other_source`` (images from another
  source than the task's normals, a confound a detector can cheat on);
- ``dedup``: the primary rows minus those flagged ``dup_of_train`` (byte-identical to a training
  image);
- ``all_sources``: every row, reported only where ``other_source`` rows exist.

``f1_best``/``acc_best``/``threshold_best`` use the threshold that maximises F1 on the evaluated labels
(the paper's protocol, which peeks at the test labels); ``*_val`` use the threshold fitted on
validation normals at training time (what a deployed model does).

The report writers and :func:`~medmoe.report.evaluation.evaluate_run` (collect → metrics → report →
figures, as the CLI, the demo and the benchmark run it) live in :mod:`medmoe.report.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmoe.data.dataset import Batch, ImageDataset
from medmoe.data.manifest import Manifest, Sample
from medmoe.engine.checkpoint import Checkpoint
from medmoe.engine.data import default_cache_dir
from medmoe.engine.inference import predict, task_text_embeddings
from medmoe.errors import DatasetError
from medmoe.metrics import image_metrics, mean_over_tasks, pixel_metrics, routing_accuracy
from medmoe.outputs import OutputArrays

PROTOCOL = {
    "f1_best, acc_best, threshold_best": "threshold maximising F1 on the evaluated (test) labels — the "
                                         "paper's protocol; it peeks at test labels",
    "f1_val, acc_val, sensitivity_val, specificity_val": "threshold fitted on validation normals only "
                                                         "(deployable)",
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
    """The evaluated rows and the model's outputs on them."""

    samples: list[Sample]
    batch: Batch
    predictions: OutputArrays


def collect(checkpoint: Checkpoint, manifests: Sequence[Manifest], *, split: str = "test",
            batch_size: int = 64, cache_dir: Path | None = None, progress: bool = True) -> EvaluationData:
    """Load the split's images of the checkpoint's tasks and run the model on them."""
    entries = [(m, s) for m in manifests for s in m.select(split=split) if s.task in checkpoint.tasks]
    if not entries:
        raise DatasetError(f"no '{split}' images of the model's tasks ({', '.join(checkpoint.tasks.ids)}) "
                           "in the given manifests")
    dataset = ImageDataset(entries, checkpoint.tasks, resolution=checkpoint.config.model.resolution,
                           cache_dir=cache_dir or default_cache_dir(), with_masks=True)
    batch = dataset.materialize(progress=progress)
    text = task_text_embeddings(checkpoint.prompt_embeddings, batch.task_indices)
    preds = predict(checkpoint.model, batch.images, text, batch_size=batch_size)
    return EvaluationData(samples=[s for _, s in entries], batch=batch, predictions=preds)


def maps_for(checkpoint: Checkpoint, data: EvaluationData, rows: np.ndarray, batch_size: int = 64) -> OutputArrays:
    """Recompute the given rows keeping anomaly maps, reconstructions and hallucination maps."""
    index = torch.from_numpy(rows)
    text = task_text_embeddings(checkpoint.prompt_embeddings, data.batch.task_indices[index])
    return predict(checkpoint.model, data.batch.images[index], text, batch_size=batch_size, keep_maps=True)


def view_rows(data: EvaluationData, view: str = "primary") -> np.ndarray:
    """``(n,)`` bool: the evaluated rows in ``view`` (:data:`VARIANTS`: those without its excluded flags)."""
    excluded = set(VARIANTS[view])
    return np.array([not set(s.flags) & excluded for s in data.samples], dtype=bool)


def compute_metrics(checkpoint: Checkpoint, data: EvaluationData) -> dict[str, Any]:
    """Per-task and mean metrics (see the module docstring for the three views)."""
    labels = data.batch.labels.numpy()
    task_idx = data.batch.task_indices.numpy()
    flags = [set(s.flags) for s in data.samples]
    rows = {name: view_rows(data, name) for name in VARIANTS}
    per_task: dict[str, dict[str, Any]] = {}
    for t, task in enumerate(checkpoint.tasks):
        in_task = task_idx == t
        if not in_task.any():
            continue
        threshold = checkpoint.thresholds.get(task.id)
        threshold = None if threshold is None or math.isnan(threshold) else threshold
        views = {}
        for name, in_view in rows.items():
            keep = in_task & in_view
            views[name] = image_metrics(data.predictions.score[keep], labels[keep], threshold_val=threshold)
        result: dict[str, Any] = dict(views["primary"])
        result["dedup"] = views["dedup"]
        if views["all_sources"]["n_abnormal"] + views["all_sources"]["n_normal"] != \
                result["n_abnormal"] + result["n_normal"]:
            result["all_sources"] = views["all_sources"]
        result["excluded"] = {flag: int(sum(flag in f for f, i in zip(flags, in_task, strict=False) if i))
                              for flag in ("other_source", "dup_of_train")}
        if data.predictions.router_weights is not None and checkpoint.config.model.num_experts >= len(checkpoint.tasks):
            result["routing_accuracy"] = routing_accuracy(data.predictions.router_weights[in_task], task_idx[in_task])
        result.update(_pixel_view(checkpoint, data, in_task, rows["primary"]))
        per_task[task.id] = result
    return {
        "tasks": per_task,
        "mean": mean_over_tasks({k: numeric_fields(v) for k, v in per_task.items()}),
        "mean_dedup": mean_over_tasks({k: v["dedup"] for k, v in per_task.items()}),
        "protocol": PROTOCOL,
    }


def _pixel_view(checkpoint: Checkpoint, data: EvaluationData, in_task: np.ndarray,
                primary: np.ndarray) -> dict[str, float]:
    """Pixel AUROC and best Dice over the task's abnormal images with masks plus its normals (primary rows)."""
    has_mask = data.batch.has_mask.numpy()
    labels = data.batch.labels.numpy()
    if not (in_task & has_mask & (labels == 1)).any():
        return {}
    rows = np.flatnonzero(in_task & primary & (has_mask | (labels == 0)))
    preds = maps_for(checkpoint, data, rows)
    masks = data.batch.masks[torch.from_numpy(rows), 0].numpy() > 0.5
    return pixel_metrics(preds.required("anomaly_map"), masks)


def numeric_fields(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of one task's metrics (its nested views left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
