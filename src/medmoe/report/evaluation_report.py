"""Write an evaluation: ``metrics.json`` with its Markdown tables and the paper's figures, and
:func:`evaluate_run`, the one sequence the CLI, the demo and the benchmark run
(:func:`~medmoe.engine.evaluate.collect` → :func:`~medmoe.engine.evaluate.compute_metrics` →
:func:`write_report` → :func:`write_figures`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medmoe import __version__
from medmoe.atomic import atomic_write_text
from medmoe.data.manifest import Manifest
from medmoe.engine.checkpoint import Checkpoint
from medmoe.engine.evaluate import (
    EvaluationData,
    RunMetrics,
    collect,
    compute_metrics,
    maps_for,
    view_rows,
)
from medmoe.metrics import INTERVAL_METRICS
from medmoe.report.figures import plot_examples, plot_expert_heatmap, plot_score_histograms
from medmoe.report.tables import interval_table, metrics_table, write_json
from medmoe.trust import DEFAULT_FPR
from medmoe.trust.calibration import deployed_threshold


@dataclass(frozen=True)
class RunEvaluation:
    """What :func:`evaluate_run` computed and wrote.

    Attributes:
        data: the evaluated rows, batch and predictions.
        metrics: the metrics (:func:`~medmoe.engine.evaluate.compute_metrics`).
        markdown: the report's Markdown.
        figures: the figure files written (empty without ``figures``).
    """

    data: EvaluationData
    metrics: RunMetrics
    markdown: str
    figures: list[Path]


def evaluate_run(checkpoint: Checkpoint, manifests: Sequence[Manifest], out: str | Path, *, split: str = "test",
                 figures: str | Path | None = None, batch_size: int = 64, cache_dir: Path | None = None,
                 progress: bool = True, fpr: float = DEFAULT_FPR) -> RunEvaluation:
    """Evaluate ``checkpoint`` on the ``split`` rows of ``manifests``: ``metrics.json`` at ``out`` (and
    its ``.md``), the figures in ``figures`` if given; the deployable decisions at the false-positive
    rate ``fpr``, as ``medmoe detect --fpr`` makes them."""
    data = collect(checkpoint, manifests, split=split, batch_size=batch_size, cache_dir=cache_dir,
                   progress=progress)
    metrics = compute_metrics(checkpoint, data, fpr=fpr)
    markdown = write_report(metrics, checkpoint, out, split=split)
    written = write_figures(checkpoint, data, figures, fpr=fpr) if figures is not None else []
    return RunEvaluation(data=data, metrics=metrics, markdown=markdown, figures=written)


def report_markdown(metrics: RunMetrics, checkpoint: Checkpoint, split: str) -> str:
    """The evaluation as Markdown tables (paper protocol, deployable threshold, dedup, extras)."""
    tasks = {k: v.scalars() for k, v in metrics.tasks.items()}
    info = checkpoint.info
    lines = [
        f"## medmoe evaluation — `{split}` split",
        "",
        (f"Model `{checkpoint.path}`: {checkpoint.config.model.architecture}, "
        f"{checkpoint.config.model.resolution}×{checkpoint.config.model.resolution}, "
        f"N={checkpoint.config.model.num_experts}, K={checkpoint.config.model.top_k}, "
        f"seed {info.get('seed', '?')}, epoch {info.get('best_epoch', '?')} of {info.get('epochs', '?')} "
        f"(selection: {info.get('selection', '?')}). Thresholds: {info.get('threshold_rule', '?')}."),
        "",
        metrics_table(tasks, ("auroc", "ap", "f1_best", "acc_best"),
                      title="Paper protocol: F1/ACC at the best-F1 threshold on the test labels "
                            "(peeks at test labels)"),
        "",
        metrics_table(tasks, ("f1_val", "acc_val", "sensitivity_val", "specificity_val"),
                      title="Deployable: the decision medmoe detect makes (threshold from validation normals only)"),
        "",
        interval_table({k: v.primary.to_dict() for k, v in metrics.tasks.items()},
                       {k: v.intervals for k, v in metrics.tasks.items()}, INTERVAL_METRICS,
                       title="95 % confidence intervals: percentile bootstrap, 1,000 resamples of the test images "
                             "stratified by class (the threshold fixed)"),
        "",
        _deployed_table(metrics),
        "",
        metrics_table({k: v.dedup.to_dict() for k, v in metrics.tasks.items()},
                      ("auroc", "ap", "f1_best", "acc_best", "n_normal", "n_abnormal"),
                      title="Without test images byte-identical to a training image (dup_of_train)"),
    ]
    extra: dict[str, dict[str, float]] = {
        k: {m: v[m] for m in ("routing_accuracy", "pixel_auroc", "dice_best") if m in v} for k, v in tasks.items()}
    if any(extra.values()):
        columns = [m for m in ("routing_accuracy", "pixel_auroc", "dice_best") if any(m in v for v in extra.values())]
        lines += ["", metrics_table(extra, columns,
                                    title="Routing accuracy and localisation (dice_best peeks at masks)")]
    confounded = {k: v.all_sources.to_dict() for k, v in metrics.tasks.items() if v.all_sources is not None}
    if confounded:
        lines += ["", metrics_table(confounded, ("auroc", "ap", "f1_best", "acc_best", "n_abnormal"),
                                    title="All sources, including the confounded other-source abnormals")]
    return "\n".join(lines) + "\n"


def _deployed_table(metrics: RunMetrics) -> str:
    """What ``medmoe detect`` says of the evaluated images: the rate decided at against the false-positive rate
    observed on the normals, and how often the scope and mismatch caveats fire on normal and abnormal images."""
    deployed = {k: v.deployed.to_dict() for k, v in metrics.tasks.items() if v.deployed is not None}
    fpr = next(iter(deployed.values()))["fpr"] if deployed else DEFAULT_FPR
    return metrics_table(deployed, ("level", "fpr_observed", "sensitivity", "out_of_scope_normal",
                                    "out_of_scope_abnormal", "mismatch_normal", "mismatch_abnormal"),
                         title=f"Deployed decision at a false-positive rate of {fpr:g}: the rate decided at "
                               "(level; higher where few calibration normals cannot reach it) against the rate "
                               "observed on the normals, and the out-of-scope / mismatch caveats (%)")


def write_report(metrics: RunMetrics, checkpoint: Checkpoint, out: str | Path, *, split: str) -> str:
    """Write ``metrics.json`` (at ``out``) and the Markdown table beside it; return the Markdown."""
    out = Path(out)
    payload = {
        "run": str(checkpoint.path),
        "split": split,
        "medmoe_version": __version__,
        "checkpoint_info": checkpoint.info,
        "thresholds": checkpoint.thresholds,
        **metrics.to_dict(),
    }
    write_json(payload, out)
    markdown = report_markdown(metrics, checkpoint, split)
    atomic_write_text(out.with_suffix(".md"), markdown)
    return markdown


def write_figures(checkpoint: Checkpoint, data: EvaluationData, folder: str | Path, *,
                  examples_per_task: int = 4, seed: int = 0, fpr: float = DEFAULT_FPR) -> list[Path]:
    """The paper's figures from this evaluation: localisation examples per task (Figs. 4, 10–13),
    score histograms (Fig. 5, with the threshold ``medmoe detect`` decides at for ``fpr``) and the
    task × expert heatmap (Fig. 6). Examples and histograms show the rows of the primary view, which
    the report's first table measures (other-source rows left out)."""
    folder = Path(folder)
    labels = data.batch.labels.numpy()
    task_idx = data.batch.task_indices.numpy()
    primary = view_rows(data, "primary")
    scores = data.predictions.score
    written = []
    rng = np.random.default_rng(seed)
    for t, task in enumerate(checkpoint.tasks):
        rows = [r for label in (0, 1)
                for r in rng.permutation(np.flatnonzero((task_idx == t) & (labels == label) & primary))
                [:examples_per_task // 2]]
        if not rows:
            continue
        rows_arr = np.array(sorted(rows))
        preds = maps_for(checkpoint, data, rows_arr)
        images = data.batch.images[torch.from_numpy(rows_arr)].numpy()
        gray = images.mean(axis=1)
        maps = preds.required("anomaly_map")
        u = None if preds.hallucination_map is None else np.abs(preds.hallucination_map).mean(axis=1)
        masks = data.batch.masks[torch.from_numpy(rows_arr), 0].numpy() > 0.5
        if preds.reconstruction is not None:
            x_hat = preds.reconstruction.mean(axis=1)
            low, high = checkpoint.config.model.value_range
            error = ((gray - x_hat) * (high - low)) ** 2  # in the model's range, like the anomaly map
        else:  # a feature model: the map with the hallucination discount undone, on the image grid (the
            # error itself for reconstruct/retrieve experts; for hybrid ones, whose map also averages in
            # the undiscounted retrieval error, an upper bound of it)
            x_hat = None
            error = maps * (1.0 if u is None else np.exp(u**2))
        titles = [f"{'abnormal' if labels[r] else 'normal'} · score {scores[r]:.4f}" for r in rows_arr]
        written.append(plot_examples(folder / f"examples_{task.id}.png", gray, x_hat, error, u,
                                     maps, titles, masks=masks))
    in_task = {task.id: (task_idx == t) & primary for t, task in enumerate(checkpoint.tasks)}
    groups = {task: (scores[rows], labels[rows]) for task, rows in in_task.items() if rows.any()}
    excluded = "" if primary.all() else f"; {int((~primary).sum())} other-source rows left out, as in the table"
    thresholds = {task: deployed_threshold(checkpoint.calibration, checkpoint.thresholds, task, fpr)[0]
                  for task in groups}
    written.append(plot_score_histograms(folder / "score_histograms.png", groups,
                                         f"Anomaly scores, normal vs abnormal (test{excluded})", thresholds=thresholds,
                                         threshold_label=f"detect's threshold (fpr {fpr:g})"))
    if data.predictions.router_weights is not None:
        written.append(plot_expert_heatmap(folder / "expert_heatmap.png", data.predictions.router_weights,
                                           task_idx, checkpoint.tasks.ids))
    return written
