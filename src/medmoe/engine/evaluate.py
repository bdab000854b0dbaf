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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmoe import __version__
from medmoe.atomic import atomic_write_text
from medmoe.data.dataset import Batch, ImageDataset
from medmoe.data.manifest import Manifest, Sample
from medmoe.engine.checkpoint import Checkpoint
from medmoe.engine.data import default_cache_dir
from medmoe.engine.inference import Predictions, predict, task_text_embeddings
from medmoe.errors import DatasetError
from medmoe.metrics import image_metrics, mean_over_tasks, pixel_metrics, routing_accuracy
from medmoe.report.figures import plot_examples, plot_expert_heatmap, plot_score_histograms
from medmoe.report.tables import metrics_table, write_json

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
    predictions: Predictions


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


def maps_for(checkpoint: Checkpoint, data: EvaluationData, rows: np.ndarray, batch_size: int = 64) -> Predictions:
    """Recompute the given rows keeping anomaly maps, reconstructions and hallucination maps."""
    index = torch.from_numpy(rows)
    text = task_text_embeddings(checkpoint.prompt_embeddings, data.batch.task_indices[index])
    return predict(checkpoint.model, data.batch.images[index], text, batch_size=batch_size, keep_maps=True)


def compute_metrics(checkpoint: Checkpoint, data: EvaluationData) -> dict[str, Any]:
    """Per-task and mean metrics (see the module docstring for the three views)."""
    labels = data.batch.labels.numpy()
    task_idx = data.batch.task_indices.numpy()
    flags = [set(s.flags) for s in data.samples]
    per_task: dict[str, dict[str, Any]] = {}
    for t, task in enumerate(checkpoint.tasks):
        in_task = task_idx == t
        if not in_task.any():
            continue
        threshold = checkpoint.thresholds.get(task.id)
        threshold = None if threshold is None or math.isnan(threshold) else threshold
        views = {}
        for name, excluded in VARIANTS.items():
            keep = in_task & np.array([not f & set(excluded) for f in flags])
            views[name] = image_metrics(data.predictions.scores[keep], labels[keep], threshold_val=threshold)
        result: dict[str, Any] = dict(views["primary"])
        result["dedup"] = views["dedup"]
        if views["all_sources"]["n_abnormal"] + views["all_sources"]["n_normal"] != \
                result["n_abnormal"] + result["n_normal"]:
            result["all_sources"] = views["all_sources"]
        result["excluded"] = {flag: int(sum(flag in f for f, i in zip(flags, in_task) if i))
                              for flag in ("other_source", "dup_of_train")}
        if data.predictions.router_weights is not None and checkpoint.config.model.num_experts >= len(checkpoint.tasks):
            result["routing_accuracy"] = routing_accuracy(data.predictions.router_weights[in_task], task_idx[in_task])
        result.update(_pixel_view(checkpoint, data, in_task, flags))
        per_task[task.id] = result
    return {
        "tasks": per_task,
        "mean": mean_over_tasks({k: _flat(v) for k, v in per_task.items()}),
        "mean_dedup": mean_over_tasks({k: v["dedup"] for k, v in per_task.items()}),
        "protocol": PROTOCOL,
    }


def _pixel_view(checkpoint: Checkpoint, data: EvaluationData, in_task: np.ndarray,
                flags: list[set[str]]) -> dict[str, float]:
    """Pixel AUROC and best Dice over the task's abnormal images with masks plus its normals."""
    has_mask = data.batch.has_mask.numpy()
    labels = data.batch.labels.numpy()
    primary = np.array(["other_source" not in f for f in flags])
    if not (in_task & has_mask & (labels == 1)).any():
        return {}
    rows = np.flatnonzero(in_task & primary & (has_mask | (labels == 0)))
    preds = maps_for(checkpoint, data, rows)
    masks = data.batch.masks[torch.from_numpy(rows), 0].numpy() > 0.5
    return pixel_metrics(preds.anomaly_maps, masks)


def _flat(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def report_markdown(metrics: dict[str, Any], checkpoint: Checkpoint, split: str) -> str:
    """The evaluation as Markdown tables (paper protocol, deployable threshold, dedup, extras)."""
    tasks = {k: _flat(v) for k, v in metrics["tasks"].items()}
    nested = metrics["tasks"]
    info = checkpoint.info
    lines = [
        f"## medmoe evaluation — `{split}` split",
        "",
        f"Model `{checkpoint.path}`: {checkpoint.config.model.architecture}, "
        f"{checkpoint.config.model.resolution}×{checkpoint.config.model.resolution}, "
        f"N={checkpoint.config.model.num_experts}, K={checkpoint.config.model.top_k}, "
        f"seed {info.get('seed', '?')}, epoch {info.get('best_epoch', '?')} of {info.get('epochs', '?')} "
        f"(selection: {info.get('selection', '?')}). Thresholds: {info.get('threshold_rule', '?')}.",
        "",
        metrics_table(tasks, ("auroc", "ap", "f1_best", "acc_best"),
                      title="Paper protocol: F1/ACC at the best-F1 threshold on the test labels (peeks at test labels)"),
        "",
        metrics_table(tasks, ("f1_val", "acc_val", "sensitivity_val", "specificity_val"),
                      title="Deployable: threshold fitted on validation normals only"),
        "",
        metrics_table({k: v["dedup"] for k, v in nested.items()},
                      ("auroc", "ap", "f1_best", "acc_best", "n_normal", "n_abnormal"),
                      title="Without test images byte-identical to a training image (dup_of_train)"),
    ]
    extra = {k: {m: v[m] for m in ("routing_accuracy", "pixel_auroc", "dice_best") if m in v}
             for k, v in tasks.items()}
    if any(extra.values()):
        columns = [m for m in ("routing_accuracy", "pixel_auroc", "dice_best") if any(m in v for v in extra.values())]
        lines += ["", metrics_table(extra, columns, title="Routing accuracy and localisation (dice_best peeks at masks)")]
    confounded = {k: v["all_sources"] for k, v in nested.items() if "all_sources" in v}
    if confounded:
        lines += ["", metrics_table(confounded, ("auroc", "ap", "f1_best", "acc_best", "n_abnormal"),
                                    title="All sources, including the confounded other-source abnormals")]
    return "\n".join(lines) + "\n"


def write_report(metrics: dict[str, Any], checkpoint: Checkpoint, out: str | Path, *, split: str) -> str:
    """Write ``metrics.json`` (at ``out``) and the Markdown table beside it; return the Markdown."""
    out = Path(out)
    payload = {
        "run": str(checkpoint.path),
        "split": split,
        "medmoe_version": __version__,
        "checkpoint_info": checkpoint.info,
        "thresholds": checkpoint.thresholds,
        **metrics,
    }
    write_json(payload, out)
    markdown = report_markdown(metrics, checkpoint, split)
    atomic_write_text(out.with_suffix(".md"), markdown)
    return markdown


def write_figures(checkpoint: Checkpoint, data: EvaluationData, folder: str | Path, *,
                  examples_per_task: int = 4, seed: int = 0) -> list[Path]:
    """The paper's figures from this evaluation: localisation examples per task (Figs. 4, 10–13),
    score histograms (Fig. 5) and the task × expert heatmap (Fig. 6)."""
    folder = Path(folder)
    labels = data.batch.labels.numpy()
    task_idx = data.batch.task_indices.numpy()
    scores = data.predictions.scores
    written = []
    rng = np.random.default_rng(seed)
    for t, task in enumerate(checkpoint.tasks):
        rows = [r for label in (0, 1)
                for r in rng.permutation(np.flatnonzero((task_idx == t) & (labels == label)))[:examples_per_task // 2]]
        if not rows:
            continue
        rows_arr = np.array(sorted(rows))
        preds = maps_for(checkpoint, data, rows_arr)
        images = data.batch.images[torch.from_numpy(rows_arr)].numpy()
        gray = images.mean(axis=1)
        u = None if preds.hallucination_maps is None else np.abs(preds.hallucination_maps).mean(axis=1)
        masks = data.batch.masks[torch.from_numpy(rows_arr), 0].numpy() > 0.5
        if preds.reconstructions is not None:
            x_hat = preds.reconstructions.mean(axis=1)
            low, high = checkpoint.config.model.value_range
            error = ((gray - x_hat) * (high - low)) ** 2  # in the model's range, like the anomaly map
        else:  # a feature model: the map with the hallucination discount undone, on the image grid (the
            # error itself for reconstruct/retrieve experts; for hybrid ones, whose map also averages in
            # the undiscounted retrieval error, an upper bound of it)
            x_hat = None
            error = preds.anomaly_maps * (1.0 if u is None else np.exp(u**2))
        titles = [f"{'abnormal' if labels[r] else 'normal'} · score {scores[r]:.4f}" for r in rows_arr]
        written.append(plot_examples(folder / f"examples_{task.id}.png", gray, x_hat, error, u,
                                     preds.anomaly_maps, titles, masks=masks))
    groups = {task.id: (scores[task_idx == t], labels[task_idx == t]) for t, task in enumerate(checkpoint.tasks)
              if (task_idx == t).any()}
    written.append(plot_score_histograms(folder / "score_histograms.png", groups,
                                         "Anomaly scores, normal vs abnormal (test)"))
    if data.predictions.router_weights is not None:
        written.append(plot_expert_heatmap(folder / "expert_heatmap.png", data.predictions.router_weights,
                                           task_idx, checkpoint.tasks.ids))
    return written
