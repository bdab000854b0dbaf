"""Scoring whole folders: input discovery, the run loop, output names, and the files ``medmoe detect`` writes.

:func:`detect_files` is the loop the CLI runs (and any other front end: a distributed runner, a DICOM
node): batches through a :class:`~medmoe.api.detector.Detector`, overlays drawn in worker processes,
rows appended to the results as each image's outputs are complete.

For each input image, in the output folder (``<name>``: the file's path relative to the folder given
on the command line, without its suffix, with ``_frame007``/``_slice040`` when ``--frame all`` or
``--slice all`` makes several images of one file; unique, ``_2``, ``_3`` … appended on a clash):

- ``<name>_overlay.png``: the anomaly map over the image (:mod:`medmoe.api.render`);
- with ``--maps``, ``<name>_maps.npz``: ``anomaly_map`` and, where the model has one,
  ``hallucination_map``, both ``(H, W)`` float16 at the image's own size, compressed;

and ``results.csv`` with one row per image (:func:`csv_columns`); a file that could not be scored
has an empty score and its reason in ``error``. While a run goes on, its rows are appended to
``results.partial.csv`` (flushed to disk per batch); the run ends — finished, interrupted by a
signal or failed — by writing ``results.csv`` atomically, in input order, and removing the partial
file. A run killed outright leaves the partial file, which ``resume`` reads. Every other file is
written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import multiprocessing
import os
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from medmoe.api.prompt_matching import PromptWarning
from medmoe.api.render import display_inputs, result_title, write_overlay
from medmoe.api.results import DetectionResult, ResultRecord
from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.errors import ConfigError, MedmoeError
from medmoe.io import Plane, is_image_file, planes
from medmoe.io.choice import Choice
from medmoe.io.discovery import walk_files
from medmoe.io.formats import image_stem
from medmoe.trust import DEFAULT_FPR

if TYPE_CHECKING:
    from medmoe.api.detector import Detector

RESULTS_NAME = "results.csv"
PARTIAL_NAME = "results.partial.csv"
AHEAD_BATCHES = 2
"""Scoring waits while more than this many batches of images are still having their overlays drawn."""
FILE_COLUMNS: tuple[str, ...] = ("overlay", "maps", "error")
"""``results.csv`` columns after the record's: ``overlay``/``maps`` relative to the output folder (empty when
not written), ``error`` the reason a file could not be scored (its record columns then empty but
``source``/``frame``/``slice``)."""


def csv_columns(record: type[ResultRecord] = ResultRecord) -> tuple[str, ...]:
    """The columns of ``results.csv``: the :class:`~medmoe.api.results.ResultRecord` fields (whose
    descriptions say what each holds), then :data:`FILE_COLUMNS`."""
    return (*(f.name for f in dataclasses.fields(record)), *FILE_COLUMNS)


COLUMNS = csv_columns()
"""The columns of ``results.csv`` (:func:`csv_columns`)."""


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

    Workers ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, and the main process,
    not each worker, decides what to keep. Use as a context manager; leaving it waits for every
    overlay (and raises the first failure) or, when leaving on an exception, cancels what has not
    started and stops the workers.
    """

    def __init__(self, workers: int = 0) -> None:
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                                          initializer=_ignore_sigint) if workers > 0 else None)

    def submit(self, result: DetectionResult, path: Path) -> Future[None]:
        """Draw ``result``'s overlay into ``path`` (now, or in a worker); the future is done when it is written."""
        inputs = display_inputs(result.image, result.anomaly_map, result.threshold)
        if self._pool is not None:
            return self._pool.submit(write_overlay, path, inputs, result_title(result), result.threshold)
        done: Future[None] = Future()
        write_overlay(path, inputs, result_title(result), result.threshold)
        done.set_result(None)
        return done

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def _ignore_sigint() -> None:
    """Overlay workers' initializer: leave Ctrl-C to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def write_outputs(result: DetectionResult, name: str, out_dir: Path, *, overlays: OverlayWriter | None = None,
                  maps: bool = False) -> tuple[dict[str, str], Future[None] | None]:
    """Write the maps of one result and start its overlay PNG (when ``overlays`` is given); returns their
    CSV cells (relative paths) and the overlay's future. Maps are ``float16``, compressed (3 significant
    digits; a 6000² map is tens of MB instead of 288)."""
    cells = {"overlay": "", "maps": ""}
    drawn = None
    if overlays is not None:
        drawn = overlays.submit(result, out_dir / f"{name}_overlay.png")
        cells["overlay"] = f"{name}_overlay.png"
    if maps:
        arrays = {"anomaly_map": result.anomaly_map.astype(np.float16)}
        if result.hallucination_map is not None:
            arrays["hallucination_map"] = result.hallucination_map.astype(np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(out_dir / f"{name}_maps.npz", buffer.getvalue())
        cells["maps"] = f"{name}_maps.npz"
    return cells, drawn


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


def result_row(plane: Plane, outcome: DetectionResult | MedmoeError,
               files: dict[str, str] | None = None) -> dict[str, str]:
    """One ``results.csv`` row (all cells as text) for the result or error of one file or frame."""
    row = dict.fromkeys(COLUMNS, "")
    row["source"] = os.path.abspath(plane.path)
    if plane.index is not None:
        row["frame" if plane.frame is not None else "slice"] = str(plane.index)
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


@dataclass(frozen=True)
class DetectOptions:
    """How :func:`detect_files` scores and what it writes (the ``medmoe detect`` options).

    Attributes:
        prompt, task, strict, fpr, window: as :meth:`~medmoe.api.detector.Detector.predict_batch`.
        batch_size: images per forward pass (and per flush of the results).
        overlays: write ``<name>_overlay.png`` per image.
        maps: write ``<name>_maps.npz`` per image.
        workers: processes drawing overlays (0: in this one).
        resume: keep the rows of an earlier run in the same folder and score only the images it has
            no row for (or whose row is an error).
    """

    prompt: str | None = None
    task: str | None = None
    strict: bool = False
    fpr: float = DEFAULT_FPR
    window: tuple[float, float] | None = None
    batch_size: int = 32
    overlays: bool = True
    maps: bool = False
    workers: int = 0
    resume: bool = False


@dataclass
class DetectRun:
    """What :func:`detect_files` did.

    Attributes:
        rows: every row of ``results.csv`` (earlier runs' kept rows included), in input order.
        results: the path of ``results.csv``.
        total: the images asked for.
        resumed: images skipped because an earlier run had scored them.
        interrupted: the signal that stopped the run (``None``: it finished).
        warnings: one entry per kind of warning: its first text and how many images had it.
    """

    rows: list[dict[str, str]]
    results: Path
    total: int
    resumed: int = 0
    interrupted: int | None = None
    warnings: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, str]]:
        """The rows of images that could not be scored."""
        return [r for r in self.rows if r["error"]]


class _ResultsLog:
    """The rows of one run: appended to the partial file as they complete, merged into ``results.csv`` at the end."""

    def __init__(self, out_dir: Path, resume: bool, model_sha256: str) -> None:
        self.out_dir = out_dir
        self.partial = out_dir / PARTIAL_NAME
        self.earlier: dict[tuple[str, str, str], dict[str, str]] = {}
        if resume:
            for path in (out_dir / RESULTS_NAME, self.partial):
                if path.is_file():
                    self.earlier.update((row_key(r), r) for r in read_rows(path) if not r["error"])
            others = {r["model_sha256"] for r in self.earlier.values()} - {model_sha256}
            if others:
                raise ConfigError(f"the results in '{out_dir}' were written by another model ({', '.join(others)}, "
                                  f"not {model_sha256}); resume with the same model, or choose a new --out")
        self.rows: dict[tuple[str, str, str], dict[str, str]] = {}
        self._handle: IO[str] = open(self.partial, "w", newline="", encoding="utf-8")  # noqa: SIM115
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
        """Write ``results.csv`` (earlier rows of images not asked for again first, then the asked images'
        rows in input order) and remove the partial file; returns the rows."""
        self._handle.close()
        merged = {**self.earlier, **self.rows}
        asked = set(order)
        rows = [r for k, r in merged.items() if k not in asked] + [merged[k] for k in order if k in merged]
        write_results(rows, self.out_dir)
        self.partial.unlink(missing_ok=True)
        return rows


def input_key(item: InputFile) -> tuple[str, str, str]:
    """The :func:`row_key` of an input's row."""
    plane = item.plane
    index = "" if plane.index is None else str(plane.index)
    return os.path.abspath(plane.path), index if plane.frame is not None else "", \
        index if plane.frame is None else ""


def detect_files(detector: Detector, inputs: Sequence[InputFile], out_dir: Path, options: DetectOptions,
                 *, progress: Callable[[int], None] | None = None) -> DetectRun:
    """Score ``inputs`` and write their outputs and ``results.csv`` into ``out_dir`` (module docstring).

    A row is recorded once its image's files are written, so ``results.csv`` never names a missing
    overlay. SIGINT (Ctrl-C, also when it reaches the overlay workers as part of the process group) and
    SIGTERM stop the run after the batch in flight: the rows of every finished image are kept, the
    workers are stopped, and :attr:`DetectRun.interrupted` holds the signal.

    Args:
        detector: the model.
        inputs: the images, from :func:`collect_inputs`.
        out_dir: an existing, writable folder.
        options: what to score and write.
        progress: called with the number of images finished after each batch (resumed ones at the start).

    Raises:
        PromptError: the prompt or task given for all images is unusable.
        ConfigError: ``resume`` over results of another model or medmoe version.
    """
    detector.check_request(options.prompt, options.task, strict=options.strict, fpr=options.fpr)
    log = _ResultsLog(out_dir, options.resume, detector.spec.weights_sha256[:12])
    todo = [item for item in inputs if input_key(item) not in log.earlier]
    run = DetectRun(rows=[], results=out_dir / RESULTS_NAME, total=len(inputs), resumed=len(inputs) - len(todo))
    if progress is not None and run.resumed:
        progress(run.resumed)
    pending: list[tuple[dict[str, str], Future[None] | None]] = []
    try:
        with _signals_as_interrupts() as caught, warnings.catch_warnings(), \
                OverlayWriter(options.workers if options.overlays else 0) as drawer:
            warnings.simplefilter("ignore", PromptWarning)  # reported once, from the results' warnings
            try:
                for start in range(0, len(todo), options.batch_size):
                    chunk = todo[start:start + options.batch_size]
                    outcomes = detector.predict_batch(
                        [i.plane for i in chunk], options.prompt, options.task, batch_size=options.batch_size,
                        strict=options.strict, fpr=options.fpr, window=options.window, return_errors=True)
                    for item, outcome in zip(chunk, outcomes, strict=True):
                        files, drawn = None, None
                        if isinstance(outcome, DetectionResult):
                            files, drawn = write_outputs(outcome, item.name, out_dir,
                                                         overlays=drawer if options.overlays else None,
                                                         maps=options.maps)
                            _count_warnings(run.warnings, outcome.warnings)
                        pending.append((result_row(item.plane, outcome, files), drawn))
                    pending = _record_done(log, pending, keep=AHEAD_BATCHES * options.batch_size)
                    if progress is not None:
                        progress(len(chunk))
                pending = _record_done(log, pending, keep=0)
            except KeyboardInterrupt:
                run.interrupted = caught[0] or signal.SIGINT
                pending = _record_done(log, pending)
                raise
    except KeyboardInterrupt:
        pass  # the workers are stopped (OverlayWriter) and the finished rows recorded
    finally:
        run.rows = log.finish([input_key(item) for item in inputs])
    return run


def _record_done(log: _ResultsLog, pending: list[tuple[dict[str, str], Future[None] | None]],
                 *, keep: int | None = None) -> list[tuple[dict[str, str], Future[None] | None]]:
    """Record the rows whose overlay is written, waiting until at most ``keep`` are still being drawn
    (``None``: no waiting); returns those. Waiting bounds how far scoring runs ahead of the drawing
    (memory), and rows reach the disk as their overlays do."""
    while True:
        finished = [drawn is None or drawn.done() for _, drawn in pending]  # once: futures finish meanwhile
        for (_, drawn), ready in zip(pending, finished, strict=True):
            if ready and drawn is not None:
                drawn.result()  # a failed overlay: raise it
        log.append([row for (row, _), ready in zip(pending, finished, strict=True) if ready])
        pending = [item for item, ready in zip(pending, finished, strict=True) if not ready]
        if keep is None or len(pending) <= keep:
            return pending
        wait([drawn for _, drawn in pending if drawn is not None], return_when=FIRST_COMPLETED)


def _count_warnings(counts: dict[str, tuple[str, int]], notes: Iterable[str]) -> None:
    """Count warnings by kind (numbers blanked): one line per kind for the summary."""
    for note in notes:
        kind = re.sub(r"\d+(\.\d+)?", "#", note)
        first, count = counts.get(kind, (note, 0))
        counts[kind] = (first, count + 1)


@contextmanager
def _signals_as_interrupts() -> Iterator[list[int]]:
    """Within the block, SIGTERM interrupts like Ctrl-C (a :class:`KeyboardInterrupt`), so both stop the run
    the same way; yields a one-item list that holds the signal that came (``0``: none). Outside the main
    thread, where signal handlers cannot be set, signals keep their handlers."""
    caught = [0]
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def interrupt(signum: int, _frame: object) -> None:
        caught[0] = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
