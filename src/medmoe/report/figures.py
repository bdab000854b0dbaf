"""The paper's figures, drawn with matplotlib from plain arrays.

- :func:`plot_examples` — anomaly localisation examples (Figs. 4, 10–13),
- :func:`plot_score_histograms` — normal vs abnormal score distributions (Fig. 5),
- :func:`plot_expert_heatmap` — which experts each task uses (Fig. 6),
- :func:`plot_tsne` — t-SNE of features with vs without prompts (Fig. 9).

Figures are built as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``: no global
figure registry (nothing to leak or close, safe in a server thread) and no interactive backend —
rendering uses Agg. Each file is rendered in memory and written atomically, so a failure leaves no
file and no partial file behind. The format follows the path's suffix (``.png``, ``.pdf``, ``.svg``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score

from medmoe.atomic import atomic_write_bytes
from medmoe.metrics import MetricInputError

__all__ = [
    "ABNORMAL_COLOUR",
    "NORMAL_COLOUR",
    "plot_examples",
    "plot_expert_heatmap",
    "plot_score_histograms",
    "plot_tsne",
    "save_figure",
]

NORMAL_COLOUR = "#8aa58a"
"""Grayish green for normal images, as in the paper's Fig. 5."""
ABNORMAL_COLOUR = "#d62728"
"""Red for abnormal images, as in the paper's Fig. 5."""
MASK_COLOUR = "#00e5ff"
IMAGE_CMAP = "gray"
ERROR_CMAP = "inferno"
HALLUCINATION_CMAP = "viridis"
HEATMAP_CMAP = "Blues"
TASK_CMAP = "tab10"
FORMATS = ("png", "pdf", "svg")
DPI = 150


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` in memory, then write it to ``path`` atomically in the suffix's format."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        allowed = ", ".join(f".{f}" for f in FORMATS)
        raise MetricInputError(f"cannot save figure '{path}': use one of the suffixes {allowed}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _stack(values: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``values`` as a finite ``(n, H, W)`` float array (of ``shape`` if given)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise MetricInputError(f"{name} must be a non-empty (n, H, W) array, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise MetricInputError(f"{name} has shape {arr.shape}, expected {shape} like the images")
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{name} holds NaN/inf values")
    return arr


def _bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


BAR_LABELS = {"error": "error per pixel (row's scale)", "hallucination": "hallucination |u|"}
"""Colour-bar labels of :func:`plot_examples`' panels: the error and anomaly map share the row's scale."""


def plot_examples(
    path: str | Path,
    images: np.ndarray,
    reconstructions: np.ndarray | None,
    error_maps: np.ndarray,
    hallucination_maps: np.ndarray | None,
    anomaly_maps: np.ndarray,
    titles: Sequence[str],
    masks: np.ndarray | None = None,
) -> Path:
    """Anomaly localisation examples, one row per image (the paper's Figs. 4 and 10–13).

    Columns: input, reconstruction ``x_hat``, squared error ``(x − x_hat)²``, hallucination map
    ``u`` (left out when ``hallucination_maps`` is None, e.g. the no-hallucination ablation), and
    the final anomaly map ``(x − x_hat)² · exp(−u²)``. Input and reconstruction share the input's
    grey scale; the squared error and the anomaly map share one colour scale per row (0 to the
    99.5th percentile of the squared error), so the errors the hallucination map discounts are
    visible as the difference between the two panels. A lesion mask, where given and not empty, is
    outlined on the input and the anomaly map.

    Args:
        path: output file (``.png``, ``.pdf`` or ``.svg``).
        images, reconstructions, error_maps, anomaly_maps: ``(n, H, W)`` arrays; ``reconstructions``
            is None for models that reconstruct trunk features (the column is left out and
            ``error_maps`` is their feature error, upsampled).
        hallucination_maps: ``(n, H, W)`` or None.
        titles: ``n`` row labels (e.g. ``"brain_mri · abnormal · score 0.012"``).
        masks: optional ``(n, H, W)`` bool lesion masks (all-False rows draw no outline).

    Returns:
        ``path``.
    """
    images = _stack(images, "images")
    shape = images.shape
    errors = _stack(error_maps, "error_maps", shape)
    panels: list[tuple[str, np.ndarray, str]] = [("input", images, "grey")]  # (title, maps, scale)
    if reconstructions is not None:
        panels.append(("reconstruction", _stack(reconstructions, "reconstructions", shape), "grey"))
    panels.append(("squared error" if reconstructions is not None else "feature error", errors, "error"))
    if hallucination_maps is not None:
        u = _stack(hallucination_maps, "hallucination_maps", shape)
        panels.append(("hallucination map u", u, "hallucination"))
    panels.append(("anomaly map", _stack(anomaly_maps, "anomaly_maps", shape), "error"))
    if len(titles) != shape[0]:
        raise MetricInputError(f"titles has {len(titles)} entries for {shape[0]} images")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != shape:
            raise MetricInputError(f"masks has shape {masks.shape}, expected {shape} like the images")

    n, n_cols = shape[0], len(panels)
    fig = Figure(figsize=(2.6 * n_cols, 2.4 * n), layout="constrained")
    axes = fig.subplots(n, n_cols, squeeze=False)
    for row in range(n):
        error_max = max(float(np.percentile(errors[row], 99.5)), 1e-12)
        scales = {
            "grey": {"cmap": IMAGE_CMAP, "vmin": images[row].min(), "vmax": images[row].max()},
            "error": {"cmap": ERROR_CMAP, "vmin": 0.0, "vmax": error_max},
            "hallucination": {"cmap": HALLUCINATION_CMAP},
        }
        for col, (name, stack, kind) in enumerate(panels):
            ax = axes[row, col]
            _bare(ax)
            if row == 0:
                ax.set_title(name)
            im = ax.imshow(stack[row], **scales[kind])
            if kind != "grey":
                bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                bar.set_label(BAR_LABELS[kind], fontsize=7)
                bar.ax.tick_params(labelsize=7)
            if masks is not None and masks[row].any() and name in ("input", "anomaly map"):
                ax.contour(masks[row], levels=[0.5], colors=MASK_COLOUR, linewidths=1.0)
        axes[row, 0].set_ylabel(titles[row], fontsize=9)
    return save_figure(fig, path)


def _grid(n_panels: int, max_cols: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes on a grid of at most ``max_cols`` columns; spare cells hidden."""
    n_cols = min(max_cols, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig = Figure(figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), layout="constrained")
    axes = list(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _auroc_text(scores: np.ndarray, labels: np.ndarray) -> str:
    if labels.all() or not labels.any():
        return "AUROC n/a (one class)"
    return f"AUROC {100 * roc_auc_score(labels, scores):.2f}"


def plot_score_histograms(
    path: str | Path,
    groups: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    *,
    normalise: bool = False,
    bins: int = 30,
    thresholds: Mapping[str, float] | None = None,
    threshold_label: str = "threshold",
) -> Path:
    """Normal vs abnormal anomaly-score histograms, per task and for all tasks pooled (Fig. 5).

    Normals are drawn in grayish green and abnormals in red, overlaid; each panel's title gives its
    AUROC (never flipped). With more than one group, the first panel pools all of them ("all tasks").

    Args:
        path: output file.
        groups: ``{task_name: (scores (n,), labels (n,))}``, labels 1 = abnormal.
        title: the figure title (e.g. ``"full model"`` or ``"without hallucination map"``).
        normalise: min-max scale each group's scores to [0, 1] before plotting and pooling, as the
            paper's x-axis does (per-task AUROCs are unchanged; the pooled one then compares
            rescaled scores). Default False: raw scores, so the pooled panel shows what one
            threshold shared by all tasks would face.
        bins: bins per panel, over that panel's score range.
        thresholds: per group, the score threshold decisions are made at, drawn as a dashed line
            (not on normalised or pooled panels, where one threshold does not apply).
        threshold_label: the line's legend entry.

    Returns:
        ``path``.
    """
    if not groups:
        raise MetricInputError("plot_score_histograms needs at least one group")
    panels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (scores, labels) in groups.items():
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels).astype(bool)
        if s.ndim != 1 or s.size == 0 or y.shape != s.shape or not np.isfinite(s).all():
            raise MetricInputError(f"group {name!r}: need finite 1-D scores and labels of the same length")
        if normalise:
            span = s.max() - s.min()
            s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
        panels[name] = (s, y)
    if len(panels) > 1:
        pooled = [np.concatenate(parts) for parts in zip(*panels.values(), strict=False)]
        panels = {"all tasks": (pooled[0], pooled[1]), **panels}

    fig, axes = _grid(len(panels), max_cols=3, panel_size=(4.0, 3.0))
    for ax, (name, (s, y)) in zip(axes, panels.items(), strict=False):
        edges = np.histogram_bin_edges(s, bins=bins)
        ax.hist(s[~y], bins=edges, color=NORMAL_COLOUR, alpha=0.75, label=f"normal (n={int((~y).sum())})")
        ax.hist(s[y], bins=edges, color=ABNORMAL_COLOUR, alpha=0.55, label=f"abnormal (n={int(y.sum())})")
        threshold = None if thresholds is None or normalise else thresholds.get(name)
        if threshold is not None and math.isfinite(threshold):
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=threshold_label)
        ax.set_title(f"{name} — {_auroc_text(s, y)}", fontsize=10)
        ax.set_xlabel("anomaly score (min-max normalised)" if normalise else "anomaly score")
        ax.set_ylabel("count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title)
    return save_figure(fig, path)


def _task_indices(task_indices: object, n: int, n_tasks: int) -> np.ndarray:
    tasks = np.asarray(task_indices)
    if tasks.shape != (n,) or not np.issubdtype(tasks.dtype, np.integer):
        raise MetricInputError(f"task_indices must be ({n},) integers, got {tasks.dtype} {tasks.shape}")
    if tasks.min() < 0 or tasks.max() >= n_tasks:
        raise MetricInputError(f"task indices must lie in [0, {n_tasks}) (one per task name)")
    return tasks


def plot_expert_heatmap(
    path: str | Path,
    router_weights: np.ndarray,
    task_indices: np.ndarray,
    task_names: Sequence[str],
) -> Path:
    """Which experts each task uses: tasks (rows) × experts (columns), two panels (Fig. 6).

    Left: the mean router weight (after top-K) each task's images give each expert. Right: how
    often each expert is an image's top-1 expert (ties go to the lower expert index) — the
    "selection frequency" of the paper's caption. Both are in [0, 1] and rows sum to 1; cells are
    annotated. A task without images is drawn as an empty grey row.

    Args:
        path: output file.
        router_weights: ``(n, N)`` router weights of ``n`` images over ``N`` experts.
        task_indices: ``(n,)`` integer task index of each image, in ``[0, len(task_names))``.
        task_names: the task names, in index order.

    Returns:
        ``path``.
    """
    weights = np.asarray(router_weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] == 0 or not np.isfinite(weights).all():
        raise MetricInputError(
            f"router_weights must be a finite, non-empty (n, N) array, got {weights.shape}"
        )
    tasks = _task_indices(task_indices, weights.shape[0], len(task_names))
    n_experts = weights.shape[1]
    top1 = np.eye(n_experts)[weights.argmax(axis=1)]
    counts = np.bincount(tasks, minlength=len(task_names))
    matrices = {}
    for label, per_image in (("mean router weight", weights), ("top-1 selection frequency", top1)):
        sums = np.zeros((len(task_names), n_experts))
        np.add.at(sums, tasks, per_image)
        with np.errstate(invalid="ignore", divide="ignore"):
            matrices[label] = sums / counts[:, None]  # NaN row for a task without images

    fig = Figure(figsize=(2.0 + 1.5 * n_experts, 1.2 + 0.5 * len(task_names)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    cmap = colormaps[HEATMAP_CMAP].with_extremes(bad="#dddddd")
    for ax, (label, matrix) in zip(axes, matrices.items(), strict=False):
        im = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for (t, e), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                ax.text(e, t, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "black")
        ax.set_xticks(range(n_experts), [f"E{e + 1}" for e in range(n_experts)])
        ax.set_xlabel("expert")
        ax.set_title(label, fontsize=10)
    axes[0].set_yticks(range(len(task_names)), [f"{name} (n={c})" for name, c in zip(task_names, counts, strict=False)])
    fig.colorbar(im, ax=list(axes), fraction=0.04, pad=0.02)
    return save_figure(fig, path)


def _embed(features: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE embedding of ``(m, d)`` features (PCA init, perplexity capped for small ``m``)."""
    perplexity = min(30.0, (features.shape[0] - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1)
    return tsne.fit_transform(features)


def plot_tsne(
    path: str | Path,
    features_by_setting: Mapping[str, tuple[np.ndarray, np.ndarray]],
    task_names: Sequence[str],
    seed: int = 0,
    max_points: int = 2000,
) -> Path:
    """t-SNE of feature vectors coloured by task, one panel per setting (the paper's Fig. 9).

    For example ``{"without prompts": (v, t), "with prompts": (v, t)}`` with the router inputs of the
    two models. Each setting is subsampled (seeded, without replacement) to at most ``max_points``
    points, since t-SNE cost grows quickly; the same seed gives the same figure. A task keeps its
    colour across panels.

    Args:
        path: output file.
        features_by_setting: ``{setting: (features (n, d), task_indices (n,))}``.
        task_names: the task names, in index order.
        seed: seeds the subsample and t-SNE.
        max_points: the subsample size cap per setting.

    Returns:
        ``path``.
    """
    if not features_by_setting:
        raise MetricInputError("plot_tsne needs at least one setting")
    rng = np.random.default_rng(seed)
    embedded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for setting, (features, task_indices) in features_by_setting.items():
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 5 or not np.isfinite(x).all():
            raise MetricInputError(
                f"setting {setting!r}: features must be finite (n, d) with n >= 5, got {x.shape}"
            )
        tasks = _task_indices(task_indices, x.shape[0], len(task_names))
        if x.shape[0] > max_points:
            keep = np.sort(rng.choice(x.shape[0], size=max_points, replace=False))
            x, tasks = x[keep], tasks[keep]
        embedded[setting] = (_embed(x, seed), tasks)

    fig, axes = _grid(len(embedded), max_cols=3, panel_size=(4.5, 4.2))
    colours = colormaps[TASK_CMAP]
    for ax, (setting, (xy, tasks)) in zip(axes, embedded.items(), strict=False):
        for t, name in enumerate(task_names):
            sel = tasks == t
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=colours(t % colours.N), label=name, alpha=0.8)
        ax.set_title(setting)
        _bare(ax)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours(t % colours.N), label=name)
        for t, name in enumerate(task_names)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(task_names), 5), frameon=False)
    return save_figure(fig, path)
