"""Scoring whole folders: input discovery, output names, and the files ``medmoe detect`` writes.

For each input image, in the output folder (``<name>``: the file's path relative to the folder given
on the command line, without its suffix, with ``_frame007``/``_slice040`` when ``--frame all`` or
``--slice all`` makes several images of one file; unique, ``_2``, ``_3`` … appended on a clash):

- ``<name>_overlay.png``: the anomaly map over the image (:mod:`medmoe.api.render`);
- with ``--maps``, ``<name>_maps.npz``: ``anomaly_map`` and, where the model has one,
  ``hallucination_map``, both ``(H, W)`` float16 at the image's own size, compressed;

and once, ``results.csv`` with one row per image (:data:`COLUMNS`); a file that could not be scored
has an empty score and its reason in ``error``. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmoe.api.render import display_inputs, result_title, write_overlay
from medmoe.api.results import DetectionResult
from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.errors import MedmoeError
from medmoe.io import Plane, is_image_file, planes
from medmoe.io.choice import Choice
from medmoe.io.discovery import walk_files
from medmoe.io.formats import image_stem

RESULTS_NAME = "results.csv"
TOP_EXPERTS = 2
COLUMNS: tuple[str, ...] = (
    "path", "frame", "slice", "task", "prompt", "prompt_similarity", "score", "threshold", "decision",
    "p_value", "fpr", "resembles", "prompt_mismatch", "out_of_scope",
    *(f"top_{key}_{i}" for i in range(1, TOP_EXPERTS + 1) for key in ("expert", "weight")),
    "overlay", "maps", "warnings", "error",
)
"""Columns of ``results.csv``. ``frame``/``slice`` are the frame (DICOM, TIFF page) or axial slice
(NIfTI) scored, for files with several (empty otherwise). ``decision`` is ``anomalous``, ``normal``,
``out_of_scope`` (the image resembles no trained task: the score is not meaningful), ``undetermined``
(the task has no threshold) or empty (error); ``p_value`` and ``fpr`` are the conformal p-value and
the false-positive rate the decision controls, ``resembles`` the task the image looks like,
``prompt_mismatch``/``out_of_scope`` ``true``/``false`` (all empty for models trained before trust outputs existed);
``top_expert_i``/``top_weight_i`` are the i-th largest router weight and its expert index;
``overlay``/``maps`` are relative to the output folder."""


@dataclass(frozen=True)
class InputFile:
    """One image to score: a file, or one frame or slice of it.

    Attributes:
        plane: the file and, for files with several, the frame or slice.
        name: its output name: relative path without suffix (``_frame007``/``_slice040`` appended when
            a file gives several images), ``/``-separated, unique in the run.
    """

    plane: Plane
    name: str

    @property
    def path(self) -> Path:
        """The file."""
        return self.plane.path


@dataclass
class Inputs:
    """What :func:`collect_inputs` found.

    Attributes:
        items: the images to score, in order.
        notes: folders not searched (:attr:`medmoe.io.discovery.Walk.notes`: links back to a folder
            already searched, folders that cannot be listed).
    """

    items: list[InputFile]
    notes: list[str]


def collect_inputs(paths: Sequence[str | Path], exclude: str | Path | None = None, *, frame: Choice = None,
                   slice_index: Choice = None) -> Inputs:
    """The images named by ``paths``, in order.

    A folder contributes every image file below it (:func:`medmoe.io.is_image_file`: a supported
    suffix or the DICOM preamble), sorted, found by :func:`medmoe.io.discovery.walk_files` (hidden
    entries skipped, folder links followed once, broken links kept so the run says why they cannot
    be read), skipping anything under ``exclude`` (the output folder). A file is taken as given, even
    with an unknown suffix or when missing, so that the run reports why it cannot be read.

    ``frame`` and ``slice_index`` are resolved per file by :func:`medmoe.io.planes`: ``all`` makes
    every frame (slice) its own image, a policy name becomes the index it picks.
    """
    found: list[tuple[Path, str]] = []
    notes: list[str] = []
    skip = Path(exclude).resolve() if exclude is not None else None
    for given in map(Path, paths):
        if not given.is_dir():
            found.append((given, image_stem(given.name)))
            continue
        walk = walk_files(given)
        notes.extend(walk.notes)
        for file in walk.files:
            if skip is not None and Path(os.path.realpath(file)).is_relative_to(skip):  # a loop cannot resolve()
                continue
            if is_image_file(file):  # a broken link counts by its suffix
                found.append((file, image_stem(file.relative_to(given).as_posix())))
    items = []
    for path, name in found:
        chosen = planes(path, frame=frame, slice_index=slice_index)
        items += [(plane, _plane_name(name, plane) if len(chosen) > 1 else name) for plane in chosen]
    return Inputs(_unique(items), notes)


def _plane_name(name: str, plane: Plane) -> str:
    """The output name of one of several planes of a file: ``<name>_frame007`` or ``<name>_slice040``."""
    unit = "frame" if plane.frame is not None else "slice"
    return f"{name}_{unit}{plane.index:03d}"


def _unique(found: Iterable[tuple[Plane, str]]) -> list[InputFile]:
    """Make output names unique by appending ``_2``, ``_3`` … to repeats."""
    taken: set[str] = set()
    inputs = []
    for plane, name in found:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        inputs.append(InputFile(plane, candidate))
    return inputs


class OverlayWriter:
    """Writes overlay PNGs, in ``workers`` processes (matplotlib draws on one core; 0: in this one).

    Use as a context manager; leaving it waits for every overlay (and raises the first failure).
    """

    def __init__(self, workers: int = 0) -> None:
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
                      if workers > 0 else None)
        self._pending: list[Future[None]] = []

    def submit(self, result: DetectionResult, path: Path) -> None:
        """Draw ``result``'s overlay into ``path`` (now, or in a worker)."""
        inputs = display_inputs(result.image, result.anomaly_map, result.threshold)
        if self._pool is None:
            write_overlay(path, inputs, result_title(result), result.threshold)
        else:
            self._pending.append(self._pool.submit(write_overlay, path, inputs, result_title(result), result.threshold))

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for future in self._pending:
                if exc[0] is None:
                    future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def write_outputs(result: DetectionResult, name: str, out_dir: Path, *, overlays: OverlayWriter | None = None,
                  maps: bool = False) -> dict[str, str]:
    """Write the overlay PNG (when ``overlays`` is given) and the maps of one result; returns their CSV
    cells (relative paths). Maps are ``float16``, compressed (3 significant digits; a 6000² map is
    tens of MB instead of 288)."""
    cells = {"overlay": "", "maps": ""}
    if overlays is not None:
        overlays.submit(result, out_dir / f"{name}_overlay.png")
        cells["overlay"] = f"{name}_overlay.png"
    if maps:
        arrays = {"anomaly_map": result.anomaly_map.astype(np.float16)}
        if result.hallucination_map is not None:
            arrays["hallucination_map"] = result.hallucination_map.astype(np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(out_dir / f"{name}_maps.npz", buffer.getvalue())
        cells["maps"] = f"{name}_maps.npz"
    return cells


def result_row(plane: Plane, outcome: DetectionResult | MedmoeError,
               files: dict[str, str] | None = None) -> dict[str, str]:
    """One ``results.csv`` row (all cells as text) for the result or error of one file or frame."""
    row = dict.fromkeys(COLUMNS, "")
    row["path"] = str(plane.path)
    if plane.index is not None:
        row["frame" if plane.frame is not None else "slice"] = str(plane.index)
    if isinstance(outcome, MedmoeError):
        row["error"] = str(outcome)
        return row
    row.update(task=outcome.task, prompt=outcome.prompt, prompt_similarity=f"{outcome.prompt_similarity:.4f}",
               score=f"{outcome.score:.6g}",
               threshold="" if math.isnan(outcome.threshold) else f"{outcome.threshold:.6g}",
               decision=outcome.decision, warnings=" | ".join(outcome.warnings))
    if not math.isnan(outcome.p_value):
        row.update(p_value=f"{outcome.p_value:.4g}", fpr=f"{outcome.fpr:.4g}", resembles=outcome.resembles or "",
                   prompt_mismatch=str(outcome.prompt_mismatch).lower(), out_of_scope=str(outcome.out_of_scope).lower())
    for i, (expert, weight) in enumerate(outcome.top_experts(TOP_EXPERTS), start=1):
        row[f"top_expert_{i}"], row[f"top_weight_{i}"] = str(expert), f"{weight:.4f}"
    row.update(files or {})
    return row


def write_results(rows: Sequence[dict[str, str]], out_dir: Path) -> Path:
    """Write ``results.csv`` (:data:`COLUMNS`) atomically; returns its path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = out_dir / RESULTS_NAME
    atomic_write_text(path, buffer.getvalue())
    return path
