"""Image- and pixel-level anomaly detection metrics (paper §4.2, plus what a deployment needs).

Pure functions over numpy arrays. Conventions used throughout:

- **labels**: 1-D, ``1``/``True`` = abnormal (the positive class), ``0``/``False`` = normal.
- **scores**: 1-D, higher = more anomalous. An AUROC below 0.5 is reported as it is, never flipped:
  a detector that ranks normals above abnormals is a finding, not a sign error to hide.
- Two kinds of threshold, never to be confused in a report:

  * ``*_best`` — the threshold that maximises F1 **on the test labels** (the paper's protocol,
    following Zhao et al. 2023). It peeks at the answers, so it is an optimistic upper bound, not
    what a deployed model achieves. Prediction rule: anomalous when ``score >= threshold``.
  * ``*_val`` — a threshold fitted on validation **normal** images only (:func:`fit_threshold`),
    the rule a deployed model would use. Prediction rule: anomalous when ``score > threshold``.

- When a quantity is undefined (AUROC with one class, sensitivity without abnormals, ...) it is
  NaN, not an exception: a per-task table stays complete and the gap is visible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from medmoe.errors import MedmoeError

__all__ = [
    "DICE_GRID_SIZE",
    "IMAGE_METRIC_KEYS",
    "INTERVAL_METRICS",
    "ImageMetrics",
    "MetricInputError",
    "MetricKind",
    "PixelMetrics",
    "best_f1_threshold",
    "bootstrap_intervals",
    "weighted_image_metrics",
    "fit_threshold",
    "image_metrics",
    "mean_over_tasks",
    "metric_kind",
    "pixel_metrics",
    "routing_accuracy",
    "summarise_seeds",
]

@dataclass(frozen=True)
class ImageMetrics:
    """Every image-level metric of one task's images (:func:`image_metrics`); each field's
    :func:`metric_kind` is in its name: ``n_*`` counts, ``threshold*`` score thresholds, the rest
    fractions in [0, 1] (NaN where undefined)."""

    auroc: float
    ap: float
    f1_best: float
    acc_best: float
    threshold_best: float
    f1_val: float
    acc_val: float
    sensitivity_val: float
    specificity_val: float
    threshold_val: float
    n_normal: int
    n_abnormal: int

    def to_dict(self) -> dict[str, float]:
        """``{metric: value}`` in field order (the form ``metrics.json`` and the tables hold)."""
        return asdict(self)


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel-level localisation metrics (:func:`pixel_metrics`)."""

    pixel_auroc: float
    dice_best: float
    threshold_dice_best: float
    n_images_with_mask: int

    def to_dict(self) -> dict[str, float]:
        """``{metric: value}`` in field order."""
        return asdict(self)


IMAGE_METRIC_KEYS = tuple(item.name for item in fields(ImageMetrics))
"""The metrics :func:`image_metrics` gives, in order."""

MetricKind = Literal["count", "threshold", "fraction"]
"""What a metric's value is: a count of images (summed over tasks, printed as an integer), a score
threshold (in the task's own score units: never averaged over tasks nor shown as a percentage) or a
fraction in [0, 1] (AUROC, F1, accuracy, Dice …: averaged, shown ×100)."""


def metric_kind(name: str) -> MetricKind:
    """The :data:`MetricKind` of a metric by its name: ``n_*`` counts, ``threshold*`` thresholds,
    everything else fractions. The one rule the MEAN row and the report tables follow."""
    if name.startswith("n_"):
        return "count"
    return "threshold" if name.startswith("threshold") else "fraction"


DICE_GRID_SIZE = 256
"""Number of thresholds, evenly spaced over the anomaly-map range, at which Dice is evaluated."""


class MetricInputError(MedmoeError, ValueError):
    """Arrays given to a metric or report function are empty, misshapen or not finite."""


def _finite(values: object, name: str, ndim: int, dtype: type | None = np.float64) -> np.ndarray:
    """``values`` as a non-empty, finite array of ``ndim`` dimensions, or one clear error."""
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != ndim or arr.size == 0:
        raise MetricInputError(f"{name} must be a non-empty {ndim}-D array, got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise MetricInputError(
            f"{name} holds {bad} NaN/inf value(s) out of {arr.size}; the model output is not finite "
            "(diverged training or a corrupt checkpoint?) — fix the model before evaluating"
        )
    return arr


def _scores(values: object, name: str) -> np.ndarray:
    """One score per image: a non-empty, finite, 1-D float64 array."""
    return _finite(values, f"{name} (one value per image)", ndim=1)


def _binary(values: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` as a bool array of ``shape``; only 0/1 or True/False are accepted."""
    arr = np.asarray(values)
    if arr.shape != shape:
        raise MetricInputError(f"{name} has shape {arr.shape}, expected {shape}")
    if arr.dtype != np.bool_:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise MetricInputError(f"{name} must hold only 0 (normal) and 1 (abnormal)")
        arr = arr.astype(bool)
    return arr


def _ratio(num: float, den: float) -> float:
    """``num / den``, or NaN when ``den`` is 0 (the quantity is undefined)."""
    return num / den if den else math.nan


def _threshold_stats(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """F1, accuracy, sensitivity and specificity of binary predictions against binary labels."""
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[False, True]).ravel().tolist()
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "acc": (tp + tn) / labels.size,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def fit_threshold(val_scores: np.ndarray, percentile: float = 95.0) -> float:
    """The deployable threshold: a percentile of the scores of validation **normal** images.

    An image whose score is strictly above the threshold is called anomalous, so about
    ``100 − percentile`` % of normals are expected to be flagged (the false-positive rate is
    chosen, not the sensitivity). No abnormal image and no test label is used.

    Args:
        val_scores: ``(n,)`` scores of validation images that are all normal.
        percentile: in ``[0, 100]``; linear interpolation between order statistics.

    Returns:
        The threshold.

    Raises:
        MetricInputError: (a ``ValueError``) if ``val_scores`` is empty, not 1-D or not finite,
            or ``percentile`` is outside ``[0, 100]``.
    """
    if not 0.0 <= percentile <= 100.0:
        raise MetricInputError(f"percentile must be within [0, 100], got {percentile}")
    scores = _scores(val_scores, "validation scores")
    return float(np.percentile(scores, percentile))


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """The threshold that maximises F1 on the given labels, with its F1 and accuracy.

    This is the paper's protocol (§4.2) and it **peeks at the test labels**: the threshold is
    chosen with the answers in hand, so the F1/accuracy it yields is an optimistic upper bound,
    not the performance of a deployed model (use :func:`fit_threshold` for that). Report it only
    labelled as such.

    Every distinct score is a candidate threshold; an image is predicted anomalous when
    ``score >= threshold``. Ties in F1 go to the highest threshold (the fewest images flagged),
    so the result is deterministic.

    Args:
        scores: ``(n,)`` anomaly scores, higher = more anomalous.
        labels: ``(n,)`` 1/True = abnormal, 0/False = normal.

    Returns:
        ``(threshold, f1, accuracy)``; all three NaN when the labels hold only one class (no
        threshold can be meaningfully "best" then).

    Raises:
        MetricInputError: on empty, misshapen or non-finite input.
    """
    scores = _scores(scores, "scores")
    labels = _binary(labels, "labels", scores.shape)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan, math.nan, math.nan
    # roc_curve without dropping points gives one entry per distinct score, from the highest
    # threshold down (its first entry, +inf, flags nothing and is skipped).
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    tp = np.rint(tpr[1:] * n_pos)
    fp = np.rint(fpr[1:] * n_neg)
    f1 = 2 * tp / (tp + fp + n_pos)  # = 2TP / (2TP + FP + FN); counts are exact, so ties are too
    best = int(np.argmax(f1))  # first maximum = highest threshold
    acc = (tp[best] + n_neg - fp[best]) / labels.size
    return float(thresholds[1 + best]), float(f1[best]), float(acc)


def image_metrics(
    scores: np.ndarray, labels: np.ndarray, *, threshold_val: float | None
) -> ImageMetrics:
    """Every image-level metric of one task's test set.

    Args:
        scores: ``(n,)`` anomaly scores of the test images, higher = more anomalous.
        labels: ``(n,)`` 1/True = abnormal, 0/False = normal.
        threshold_val: the threshold fitted on validation normals (:func:`fit_threshold`), or
            ``None`` if there is none (the ``*_val`` metrics are then NaN).

    Returns:
        An :class:`ImageMetrics` with these fields (:data:`IMAGE_METRIC_KEYS`):

        - ``auroc``, ``ap``: ROC AUC and average precision over the full score vector, abnormal =
          positive. Never flipped. NaN when only one class is present.
        - ``f1_best``, ``acc_best``, ``threshold_best``: at the F1-maximising threshold chosen **on
          these test labels** (paper protocol; test-peeking, see :func:`best_f1_threshold`).
        - ``f1_val``, ``acc_val``, ``sensitivity_val``, ``specificity_val``, ``threshold_val``: at the
          validation-fitted threshold (anomalous when ``score > threshold_val``). F1 is NaN when
          there is nothing to find and nothing flagged; sensitivity NaN without abnormals,
          specificity NaN without normals.
        - ``n_normal``, ``n_abnormal``: the class counts (ints).

    Raises:
        MetricInputError: on empty, misshapen or non-finite scores, labels other than 0/1, or a
            non-finite ``threshold_val``.
    """
    scores = _scores(scores, "scores")
    labels = _binary(labels, "labels", scores.shape)
    n_abnormal = int(labels.sum())
    n_normal = labels.size - n_abnormal
    both = n_abnormal > 0 and n_normal > 0
    thr_best, f1_best, acc_best = best_f1_threshold(scores, labels)
    if threshold_val is None:
        stats = dict.fromkeys(("f1", "acc", "sensitivity", "specificity"), math.nan)
        threshold_val = math.nan
    else:
        if not math.isfinite(threshold_val):
            raise MetricInputError(f"threshold_val must be finite or None, got {threshold_val}")
        stats = _threshold_stats(labels, scores > threshold_val)
    return ImageMetrics(
        auroc=float(roc_auc_score(labels, scores)) if both else math.nan,
        ap=float(average_precision_score(labels, scores)) if both else math.nan,
        f1_best=f1_best, acc_best=acc_best, threshold_best=thr_best,
        f1_val=stats["f1"], acc_val=stats["acc"], sensitivity_val=stats["sensitivity"],
        specificity_val=stats["specificity"], threshold_val=float(threshold_val),
        n_normal=n_normal, n_abnormal=n_abnormal,
    )


INTERVAL_METRICS = ("auroc", "ap", "f1_val", "acc_val", "sensitivity_val", "specificity_val")
"""The image metrics :func:`bootstrap_intervals` gives intervals of."""


def bootstrap_intervals(scores: np.ndarray, labels: np.ndarray, *, threshold_val: float | None,
                        resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap confidence intervals of :data:`INTERVAL_METRICS` of one test set.

    Each resample draws the normals and the abnormals with replacement, each class keeping its count
    (stratified), so every resample has both classes; ``threshold_val`` stays fixed, as it was fitted on
    validation normals. A resample is a vector of counts, one per image, and every metric is computed for
    all resamples at once as a count-weighted metric (:func:`weighted_image_metrics`).

    Args:
        scores: ``(n,)`` anomaly scores.
        labels: ``(n,)`` 1 = abnormal, 0 = normal.
        threshold_val: as for :func:`image_metrics`; ``None``: the ``*_val`` intervals are NaN.
        resamples: bootstrap resamples.
        level: the intervals' coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: seeds the resampling (the intervals are reproducible).

    Returns:
        ``{metric: (low, high)}``; ``(nan, nan)`` for every metric where a class is missing.
    """
    scores = _scores(scores, "scores")
    labels = _binary(labels, "labels", scores.shape)
    groups = [np.flatnonzero(labels == value) for value in (0, 1)]
    if not all(len(g) for g in groups):
        return dict.fromkeys(INTERVAL_METRICS, (math.nan, math.nan))
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, labels.size))
    for group in groups:
        drawn = rng.integers(0, len(group), size=(resamples, len(group)))
        flat = (drawn + len(group) * np.arange(resamples)[:, None]).ravel()
        counts[:, group] = np.bincount(flat, minlength=resamples * len(group)).reshape(resamples, len(group))
    values = weighted_image_metrics(scores, labels, counts, threshold_val=threshold_val)
    tail = 100 * (1 - level) / 2
    return {name: (math.nan, math.nan) if np.isnan(v).all()
            else (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail)))
            for name, v in values.items()}


def weighted_image_metrics(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, *,
                           threshold_val: float | None) -> dict[str, np.ndarray]:
    """:data:`INTERVAL_METRICS` of ``R`` weightings of one test set at once.

    Each row of ``weights`` weights the images (a bootstrap resample's counts); the metrics are those of
    scikit-learn's ``roc_auc_score`` and ``average_precision_score`` with ``sample_weight`` (ties share a
    threshold) and of :func:`image_metrics` at ``threshold_val`` (anomalous when ``score > threshold_val``).

    Args:
        scores: ``(n,)`` anomaly scores.
        labels: ``(n,)`` 0/1.
        weights: ``(R, n)`` non-negative weights, each row with weight on both classes.
        threshold_val: the fixed decision threshold, or ``None`` (the ``*_val`` metrics are NaN).

    Returns:
        ``{metric: (R,) values}``.
    """
    order = np.argsort(-scores, kind="stable")
    ordered, positive = scores[order], labels[order].astype(bool)
    w = weights[:, order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]  # one threshold per distinct score
    tp = np.cumsum(w * positive, axis=1)[:, last_of_tie]
    fp = np.cumsum(w * ~positive, axis=1)[:, last_of_tie]
    tpr, fpr = tp / tp[:, -1:], fp / fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    recall_steps = np.diff(tpr, axis=1, prepend=0.0)
    out = {
        "auroc": np.sum(np.diff(fpr, axis=1, prepend=0.0) * (tpr + np.c_[np.zeros(len(w)), tpr[:, :-1]]) / 2, axis=1),
        "ap": np.sum(recall_steps * precision, axis=1),
    }
    if threshold_val is None:
        return out | {name: np.full(len(w), math.nan) for name in INTERVAL_METRICS[2:]}
    flagged = scores > threshold_val
    tp_v, fn_v = (weights * (flagged & (labels == 1))).sum(1), (weights * (~flagged & (labels == 1))).sum(1)
    fp_v, tn_v = (weights * (flagged & (labels == 0))).sum(1), (weights * (~flagged & (labels == 0))).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["f1_val"] = np.where(2 * tp_v + fp_v + fn_v > 0, 2 * tp_v / (2 * tp_v + fp_v + fn_v), math.nan)
        out["acc_val"] = (tp_v + tn_v) / weights.sum(1)
        out["sensitivity_val"] = tp_v / (tp_v + fn_v)
        out["specificity_val"] = tn_v / (tn_v + fp_v)
    return out


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> PixelMetrics:
    """Pixel-level localisation metrics of anomaly maps against ground-truth lesion masks.

    All pixels of all given images are pooled. Which images to pass is the caller's choice; the
    recommended set is every test image whose mask is *known*: the abnormal images that have a
    lesion mask plus all normal images (whose mask is empty). Abnormal images without a mask must
    be left out — an all-zero mask would count their lesion pixels as normal.

    Args:
        maps: ``(n, H, W)`` float anomaly maps, higher = more anomalous.
        masks: ``(n, H, W)`` bool (or 0/1) lesion masks, same shape.

    Returns:
        A :class:`PixelMetrics`:

        - ``pixel_auroc``: ROC AUC over all pixels, exact (scikit-learn sorts every pixel: about
          1 s per million pixels on one core, memory linear in ``n·H·W``). NaN when the masks are
          all empty or all full.
        - ``dice_best``: the best pooled Dice ``2|P∩G| / (|P| + |G|)`` over
          :data:`DICE_GRID_SIZE` thresholds evenly spaced over the maps' value range, a pixel
          being predicted when ``map >= threshold``. The threshold is chosen **on these masks**
          (test-peeking, like ``f1_best``). NaN when the masks are all empty.
        - ``threshold_dice_best``: that threshold.
        - ``n_images_with_mask``: how many images have at least one lesion pixel.

    Raises:
        MetricInputError: on empty, misshapen or non-finite maps, or masks of another shape.
    """
    maps = _finite(maps, "anomaly maps (n, H, W)", ndim=3, dtype=None)  # keeps float32: no copy
    masks = _binary(masks, "masks", maps.shape)
    flat = maps.reshape(-1)
    truth = masks.reshape(-1)
    n_lesion = int(truth.sum())
    pixel_auroc = float(roc_auc_score(truth, flat)) if 0 < n_lesion < truth.size else math.nan
    n_with_mask = int(masks.reshape(len(masks), -1).any(axis=1).sum())
    if n_lesion == 0:
        return PixelMetrics(pixel_auroc, math.nan, math.nan, n_with_mask)
    # One pass of histograms on a shared grid: bin k counts values in [edge_k, edge_k+1), so the
    # suffix sums from k are exactly the pixels with value >= edge_k.
    edges = np.histogram_bin_edges(flat, bins=DICE_GRID_SIZE)
    hist_lesion, _ = np.histogram(flat[truth], bins=edges)
    hist_all, _ = np.histogram(flat, bins=edges)
    hits = np.cumsum(hist_lesion[::-1])[::-1]  # |P ∩ G| at threshold edge_k
    flagged = np.cumsum(hist_all[::-1])[::-1]  # |P| at threshold edge_k
    dice = 2 * hits / (flagged + n_lesion)
    best = int(np.argmax(dice))
    return PixelMetrics(pixel_auroc, float(dice[best]), float(edges[best]), n_with_mask)


def routing_accuracy(router_weights: np.ndarray, task_indices: np.ndarray) -> float:
    """Share of images whose highest-weighted expert is their own task's expert (task i ↔ expert i).

    Meaningful when experts are trained to specialise per task (the routing loss of Eq. 6 with
    ``N`` = number of tasks). Ties between experts go to the lowest expert index.

    Args:
        router_weights: ``(n, N)`` router weights (after top-K) of ``n`` images over ``N`` experts.
        task_indices: ``(n,)`` integer task index of each image, each in ``[0, N)``.

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        MetricInputError: on empty or misshapen input, or a task index without an expert.
    """
    weights = _finite(router_weights, "router_weights (n, N)", ndim=2)
    tasks = np.asarray(task_indices)
    if tasks.shape != weights.shape[:1] or not np.issubdtype(tasks.dtype, np.integer):
        raise MetricInputError(
            f"task_indices must be ({weights.shape[0]},) integers, got {tasks.dtype} {tasks.shape}"
        )
    if tasks.min() < 0 or tasks.max() >= weights.shape[1]:
        raise MetricInputError(
            f"task indices must lie in [0, {weights.shape[1]}) to map onto the experts, "
            f"got {tasks.min()}..{tasks.max()}"
        )
    return float(np.mean(weights.argmax(axis=1) == tasks))


def summarise_seeds(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of one metric over seeds.

    With a single seed the std is 0. A NaN in any seed makes both results NaN: a failed seed must
    show up, not silently shrink the sample.

    Raises:
        MetricInputError: if ``values`` is empty.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise MetricInputError("summarise_seeds needs a non-empty list of values, one per seed")
    mean = float(np.mean(arr))
    if arr.size == 1:
        return mean, (0.0 if math.isfinite(mean) else math.nan)
    return mean, float(np.std(arr, ddof=1))


def mean_over_tasks(per_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The MEAN row of a per-task table.

    - Metrics are averaged over tasks (unweighted, as in the paper's Table 1); a NaN in any task
      makes the mean NaN.
    - Counts (keys starting with ``n_``) are summed.
    - Thresholds (keys starting with ``threshold``) are left out: scores of different tasks live on
      different scales, so their mean means nothing.
    - Keys missing from some task are left out (a mean over a subset of tasks would be mislabelled).

    Args:
        per_task: ``{task_id: {metric: value}}``, e.g. :meth:`ImageMetrics.to_dict` per task.

    Raises:
        MetricInputError: if ``per_task`` is empty.
    """
    if not per_task:
        raise MetricInputError("mean_over_tasks needs at least one task")
    rows = list(per_task.values())
    keys = [k for k in rows[0] if metric_kind(k) != "threshold" and all(k in r for r in rows[1:])]
    out: dict[str, float] = {}
    for key in keys:
        values = [r[key] for r in rows]
        out[key] = int(sum(values)) if metric_kind(key) == "count" else float(np.mean(values))
    return out
