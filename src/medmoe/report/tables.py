"""Result tables: Markdown for reading, CSV and JSON for machines. Every file is written atomically.

Metric tables follow the paper's Table 1: one row per task, a MEAN row, fractions shown ×100 with
two decimals. Columns whose threshold was chosen on the test labels carry a ``†`` and a footnote
saying so, so a table can never present the paper's test-peeking protocol as a deployable result.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmoe.atomic import atomic_write_text
from medmoe.metrics import MetricInputError, mean_over_tasks, metric_kind, summarise_seeds

__all__ = [
    "METRIC_HEADERS",
    "format_mean_std",
    "interval_table",
    "markdown_table",
    "metrics_table",
    "seeds_metrics_table",
    "write_csv",
    "write_json",
]

Formatter = str | Callable[[Any], str]
"""A format spec for :func:`format` (``".2f"``) or a function from a value to its cell text."""

MISSING = "n/a"
"""Cell text for a value that is absent, ``None`` or NaN."""

SIGNIFICANT_DIGITS = 8
"""Floats written to CSV/JSON keep this many significant digits (exact enough, readable diffs)."""

METRIC_HEADERS: dict[str, str] = {
    "auroc": "AUROC",
    "ap": "AP",
    "f1_best": "F1†",
    "acc_best": "ACC†",
    "threshold_best": "thr†",
    "f1_val": "F1 (val thr)",
    "acc_val": "ACC (val thr)",
    "sensitivity_val": "Sens (val thr)",
    "specificity_val": "Spec (val thr)",
    "threshold_val": "val thr",
    "pixel_auroc": "Pixel AUROC",
    "dice_best": "Dice†",
    "threshold_dice_best": "Dice thr†",
    "routing_accuracy": "Routing acc",
    "n_normal": "#normal",
    "n_abnormal": "#abnormal",
    "n_images_with_mask": "#with mask",
}
"""Column headers of known metrics; other metrics are headed by their key."""

TEST_PEEKING_NOTE = (
    "† threshold chosen on the test labels (the paper's protocol): an optimistic upper bound, "
    "not what a deployed model achieves."
)
VALIDATION_NOTE = "'val thr': threshold fitted on validation normals only (deployable)."

TASK_KEY = "task"
MEAN_LABEL = "MEAN"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _cell(value: Any, fmt: Formatter) -> str:
    if _is_missing(value):
        return MISSING
    text = fmt(value) if callable(fmt) else format(value, fmt)
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, Formatter]]) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        rows: one mapping per row; a key that a row lacks, ``None`` and NaN print as ``n/a``.
        columns: ``(key, header, fmt)`` per column, in order; ``fmt`` is a format spec
            (``".2f"``, ``"d"``, ``""``) or a function returning the cell text. The first column is
            left-aligned, the others right-aligned.

    Returns:
        The table, one line per row, ending with a newline; cells are padded so the raw text lines up.
    """
    if not columns:
        raise MetricInputError("markdown_table needs at least one column")
    grid = [[header.replace("|", "\\|") for _, header, _ in columns]]
    grid += [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(3, *(len(line[i]) for line in grid)) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]
    return "\n".join([line(grid[0]), line(rule), *(line(r) for r in grid[1:])]) + "\n"


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"88.12 ± 1.03"``; ``n/a`` when the mean is NaN, the mean alone when the std is NaN."""
    if _is_missing(mean):
        return MISSING
    if _is_missing(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def interval_table(values: Mapping[str, Mapping[str, float]], intervals: Mapping[str, Mapping[str, Sequence[float]]],
                   metrics: Sequence[str], *, title: str = "") -> str:
    """Per task, each metric ×100 with its confidence interval: ``80.96 [77.5, 84.2]``.

    Args:
        values: ``{task: {metric: value}}`` (fractions).
        intervals: ``{task: {metric: (low, high)}}``; a missing interval prints the value alone.
        metrics: the columns, headed as in :data:`METRIC_HEADERS`.
        title: a heading line above the table.
    """
    def cell(task: str, metric: str) -> str:
        value, (low, high) = values[task].get(metric, math.nan), intervals.get(task, {}).get(metric, (math.nan,) * 2)
        if _is_missing(value):
            return MISSING
        return f"{100 * value:.2f}" + ("" if _is_missing(low) else f" [{100 * low:.1f}, {100 * high:.1f}]")

    rows = [{TASK_KEY: task, **{m: cell(task, m) for m in metrics}} for task in values]
    table = markdown_table(rows, [(TASK_KEY, "Task", ""), *((m, METRIC_HEADERS.get(m, m), "") for m in metrics)])
    return (f"### {title}\n\n" if title else "") + table


def _scale(metric: str, percent: bool) -> float:
    """×100 for fractions when ``percent``; counts and thresholds (raw score units) are never scaled."""
    return 100.0 if percent and metric_kind(metric) == "fraction" else 1.0


def _value_format(metric: str) -> str:
    return {"count": "d", "threshold": ".4g", "fraction": ".2f"}[metric_kind(metric)]


def _render(
    rows: list[dict[str, Any]],
    metrics: Sequence[str],
    formatters: Mapping[str, Formatter],
    title: str | None,
    subtitle: str | None,
) -> str:
    columns: list[tuple[str, str, Formatter]] = [(TASK_KEY, "Task", "")]
    columns += [(m, METRIC_HEADERS.get(m, m), formatters[m]) for m in metrics]
    parts = [f"### {title}\n\n" if title else "", f"{subtitle}\n\n" if subtitle else ""]
    parts.append(markdown_table(rows, columns))
    notes = [TEST_PEEKING_NOTE] if any("†" in METRIC_HEADERS.get(m, "") for m in metrics) else []
    notes += [VALIDATION_NOTE] if any(m.endswith("_val") for m in metrics) else []
    parts += [f"\n{note}\n" for note in notes]
    return "".join(parts)


def metrics_table(
    per_task: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("auroc", "f1_best", "acc_best"),
    percent: bool = True,
    title: str | None = None,
) -> str:
    """One run's per-task metrics as a Markdown table with a MEAN row, like the paper's Table 1.

    Args:
        per_task: ``{task_id: {metric: value}}`` (e.g. :meth:`medmoe.metrics.ImageMetrics.to_dict` per task).
        metrics: the columns, in order.
        percent: show fractions ×100 with two decimals (counts and thresholds are left as they are).
        title: an optional ``###`` heading.

    Returns:
        Markdown; the MEAN row is :func:`medmoe.metrics.mean_over_tasks` (unweighted mean over tasks,
        counts summed, thresholds and metrics missing from a task shown as ``n/a``).
    """
    rows = [{TASK_KEY: task, **values} for task, values in per_task.items()]
    rows.append({TASK_KEY: MEAN_LABEL, **mean_over_tasks(per_task)})
    formatters: dict[str, Formatter] = {}
    for m in metrics:
        scale, spec = _scale(m, percent), _value_format(m)
        formatters[m] = spec if scale == 1.0 else (lambda v, s=scale, f=spec: format(v * s, f))
    return _render(rows, metrics, formatters, title, None)


def seeds_metrics_table(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] = ("auroc", "f1_best", "acc_best"),
    percent: bool = True,
    title: str | None = None,
) -> str:
    """Per-task ``mean ± std`` over seeds, with a MEAN row — the table to publish.

    The MEAN row is computed per seed (mean over tasks) and then summarised over seeds, so its std
    is the seed-to-seed spread of the mean, not an average of per-task stds.

    Args:
        runs: one ``{task_id: {metric: value}}`` per seed; every run must hold the same tasks.
        metrics, percent, title: as in :func:`metrics_table`.

    Raises:
        MetricInputError: if ``runs`` is empty or the runs do not hold the same tasks.
    """
    if not runs:
        raise MetricInputError("seeds_metrics_table needs at least one run")
    tasks = list(runs[0])
    for i, run in enumerate(runs[1:], start=1):
        if set(run) != set(tasks):
            raise MetricInputError(f"run {i} has tasks {sorted(run)}, run 0 has {sorted(tasks)}")
    labelled = {t: [run[t] for run in runs] for t in tasks}
    labelled[MEAN_LABEL] = [mean_over_tasks(run) for run in runs]
    rows = [
        {
            TASK_KEY: label,
            **{m: summarise_seeds([v[m] for v in values]) for m in metrics if all(m in v for v in values)},
        }
        for label, values in labelled.items()
    ]
    formatters: dict[str, Formatter] = {}
    for m in metrics:
        scale = _scale(m, percent)
        formatters[m] = lambda v, s=scale: format_mean_std(v[0] * s, v[1] * s)
    subtitle = f"mean ± std over {len(runs)} seed{'s' if len(runs) > 1 else ''}"
    return _render(rows, metrics, formatters, title, subtitle)


def _rounded(value: float) -> float | None:
    """``value`` to :data:`SIGNIFICANT_DIGITS` significant digits; ``None`` for NaN/inf."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _plain(obj: Any) -> Any:
    """``obj`` as JSON-ready Python: numpy → builtins, floats rounded, NaN/inf → None, Path → str."""
    if isinstance(obj, np.ndarray | np.generic):
        return _plain(obj.tolist())
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return _rounded(obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON/CSV")


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically.

    NaN and ±inf become ``null``; floats keep :data:`SIGNIFICANT_DIGITS` significant digits; numpy
    scalars/arrays, tuples, paths and dataclasses are converted to plain JSON.

    Raises:
        TypeError: for an object of another type (before anything is written).
    """
    atomic_write_text(path, json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n")


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Write rows of scalars as a CSV file with a header, atomically.

    The columns are the union of the rows' keys, in order of first appearance. NaN, ±inf and
    ``None`` are written as empty cells; floats keep :data:`SIGNIFICANT_DIGITS` significant digits.

    Raises:
        TypeError: for a value that is not a scalar (before anything is written).
    """
    plain = [_plain(dict(row)) for row in rows]
    fields = list(dict.fromkeys(key for row in plain for key in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in plain:
        if any(isinstance(v, list | dict) for v in row.values()):
            raise TypeError(f"CSV cells must be scalars; row {row} holds a list or mapping")
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())
