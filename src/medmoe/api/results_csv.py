"""``results.csv``: one row per image, its columns, and the log that writes it as a run goes on.

The columns are the fields of :class:`~medmoe.api.results.ResultRecord` (their descriptions say what each
holds) and then :data:`FILE_COLUMNS`. While a run goes on, its rows are appended to :data:`PARTIAL_NAME`
(flushed to disk as they come, :class:`ResultsLog`); the run ends — finished, interrupted or failed — by
writing :data:`RESULTS_NAME` atomically, in input order, and removing the partial file. A run killed
outright leaves the partial file, which a resumed run reads.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from medmoe.api.results import DetectionResult, ResultRecord
from medmoe.atomic import atomic_write_text
from medmoe.errors import ConfigError, MedmoeError
from medmoe.io import Plane

RESULTS_NAME = "results.csv"
PARTIAL_NAME = "results.partial.csv"
FILE_COLUMNS: tuple[str, ...] = ("overlay", "maps", "dicom", "error")
"""``results.csv`` columns after the record's: ``overlay``/``maps``/``dicom`` (``" | "``-separated) relative to
the output folder (empty when not written), ``error`` the reason a file could not be scored (its record columns
then empty but ``source``/``frame``/``slice``)."""


def csv_columns(record: type[ResultRecord] = ResultRecord) -> tuple[str, ...]:
    """The columns of ``results.csv``: the :class:`~medmoe.api.results.ResultRecord` fields (whose
    descriptions say what each holds), then :data:`FILE_COLUMNS`."""
    return (*(f.name for f in dataclasses.fields(record)), *FILE_COLUMNS)


COLUMNS = csv_columns()
"""The columns of ``results.csv`` (:func:`csv_columns`)."""


def csv_cell(value: Any) -> str:
    """A record value as ``results.csv`` text: ``None`` empty, booleans ``true``/``false``, floats to 6
    significant digits, lists of numbers space-separated, lists of text ``" | "``-separated."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return " | ".join(value) if all(isinstance(v, str) for v in value) else " ".join(f"{v:.4g}" for v in value)
    return str(value)


def plane_cells(plane: Plane) -> dict[str, str]:
    """The cells that identify an image's row: ``source`` (the file's absolute path), ``frame``, ``slice``."""
    return {"source": os.path.abspath(plane.path), "frame": csv_cell(plane.frame_number),
            "slice": csv_cell(plane.slice_number)}


def result_row(plane: Plane, outcome: DetectionResult | MedmoeError,
               files: dict[str, str] | None = None) -> dict[str, str]:
    """One ``results.csv`` row (all cells as text) for the result or error of one file or frame."""
    row = {**dict.fromkeys(COLUMNS, ""), **plane_cells(plane)}
    if isinstance(outcome, MedmoeError):
        row["error"] = str(outcome)
        return row
    record = dataclasses.replace(outcome.record(), source=row["source"])
    row.update({key: csv_cell(value) for key, value in record.to_dict().items()})
    row.update(files or {})
    return row


def row_key(row: dict[str, str]) -> tuple[str, str, str]:
    """What identifies a row's image across runs: its file, frame and slice."""
    return row["source"], row["frame"], row["slice"]


def plane_key(plane: Plane) -> tuple[str, str, str]:
    """The :func:`row_key` of ``plane``'s row."""
    return row_key(plane_cells(plane))


def write_results(rows: Sequence[dict[str, str]], out_dir: Path) -> Path:
    """Write ``results.csv`` (:data:`COLUMNS`) atomically; returns its path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = out_dir / RESULTS_NAME
    atomic_write_text(path, buffer.getvalue())
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a ``results.csv`` or partial file (a line cut short by a kill is dropped).

    Raises:
        ConfigError: the file has other columns (written by another medmoe version).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ConfigError(f"'{path}' has other columns than this medmoe writes; resume needs results from "
                              "the same medmoe version, or choose a new --out")
        return [row for row in reader if None not in row.values() and None not in row]


class ResultsLog:
    """The rows of one run: appended to the partial file as they complete, merged into ``results.csv`` at the end.

    Args:
        out_dir: the run's output folder.
        resume: keep the scored rows of an earlier run there (:attr:`earlier`; rows with an error are
            scored again).
        model_sha256: the weights digest of the model now; resuming over another model's rows is refused.

    Raises:
        ConfigError: ``resume`` over rows of another model or of another medmoe version's columns.
    """

    def __init__(self, out_dir: Path, resume: bool, model_sha256: str) -> None:
        self.out_dir = out_dir
        self.partial = out_dir / PARTIAL_NAME
        self.earlier: dict[tuple[str, str, str], dict[str, str]] = {}
        self._earlier_errors: dict[tuple[str, str, str], dict[str, str]] = {}  # kept unless scored again
        if resume:
            for path in (out_dir / RESULTS_NAME, self.partial):
                if path.is_file():
                    for row in read_rows(path):
                        (self._earlier_errors if row["error"] else self.earlier)[row_key(row)] = row
            others = {r["model_sha256"] for r in self.earlier.values()} - {model_sha256}
            if others:
                raise ConfigError(f"the results in '{out_dir}' were written by another model ({', '.join(others)}, "
                                  f"not {model_sha256}); resume with the same model, or choose a new --out")
        self.rows: dict[tuple[str, str, str], dict[str, str]] = {}
        self._handle: IO[str] = open(self.partial, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=list(COLUMNS), lineterminator="\n")
        self._writer.writeheader()
        self._writer.writerows(self.earlier.values())
        self._sync()

    def append(self, rows: Sequence[dict[str, str]]) -> None:
        """Record completed rows, on disk at once."""
        self._writer.writerows(rows)
        self._sync()
        self.rows.update((row_key(r), r) for r in rows)

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def finish(self, order: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
        """Write ``results.csv`` (earlier rows of images not asked for again first, their errors included, then
        the asked images' rows in input order) and remove the partial file; returns the rows."""
        self._handle.close()
        merged = {**self._earlier_errors, **self.earlier, **self.rows}
        asked = set(order)
        rows = [r for k, r in merged.items() if k not in asked] + [merged[k] for k in order if k in merged]
        write_results(rows, self.out_dir)
        self.partial.unlink(missing_ok=True)
        return rows
