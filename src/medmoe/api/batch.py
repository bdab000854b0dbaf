"""Scoring whole folders: the run loop and the files ``medmoe detect`` writes per image.

:func:`detect_files` is the loop the CLI runs (and any other front end: a distributed runner, a DICOM
node): batches through a :class:`~medmoe.api.detector.Detector`, overlays drawn in worker processes,
rows appended to the results as each image's outputs are complete.

For each input image (:mod:`medmoe.api.inputs`: what is scored and its ``<name>``), in the output folder:

- ``<name>_overlay.png``: the anomaly map over the image (:mod:`medmoe.api.render`);
- with ``--maps``, ``<name>_maps.npz``: ``anomaly_map`` and, where the model has one,
  ``hallucination_map``, both ``(H, W)`` float16 at the image's own size, compressed;
- with ``--dicom-out``, for DICOM inputs, ``<name>_sr.dcm`` and ``<name>_map.dcm``: the result as a
  Comprehensive SR and the map as a Parametric Map in the input's study (:mod:`medmoe.api.dicom_results`;
  where the source's geometry allows no map, the row's warnings say why);

and ``results.csv`` with one row per image (:mod:`medmoe.api.results_csv`, written as images finish); a
file that could not be scored has an empty score and its reason in ``error``. Every file is written
atomically.
"""

from __future__ import annotations

import io
import multiprocessing
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medmoe.api.dicom_results import dicom_results
from medmoe.api.inputs import InputFile
from medmoe.api.prompt_matching import PromptWarning
from medmoe.api.render import display_inputs, result_title, write_overlay
from medmoe.api.results import DetectionResult
from medmoe.api.results_csv import RESULTS_NAME, ResultsLog, csv_cell, plane_key, result_row
from medmoe.atomic import atomic_write_bytes
from medmoe.errors import MedmoeError
from medmoe.io.dicom import read_dicom_header
from medmoe.io.formats import image_format
from medmoe.trust import DEFAULT_FPR

if TYPE_CHECKING:
    from medmoe.api.detector import Detector


AHEAD_BATCHES = 2
"""Scoring waits while more than this many batches of images are still having their overlays drawn."""


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
                  maps: bool = False, dicom: bool = False) -> tuple[dict[str, str], Future[None] | None]:
    """Write the maps (and, for a DICOM source, the DICOM objects) of one result and start its overlay PNG
    (when ``overlays`` is given); returns their CSV cells (relative paths) and the overlay's future. Maps are
    ``float16``, compressed (3 significant digits; a 6000² map is tens of MB instead of 288)."""
    cells = {"overlay": "", "maps": "", "dicom": ""}
    if dicom and result.source is not None and image_format(result.source) == "dicom":
        try:
            made = dicom_results(result, read_dicom_header(result.source))
        except MedmoeError as exc:
            result.warnings.append(str(exc))
        else:
            cells["dicom"] = csv_cell(made.write(out_dir, name))
            if made.no_map:
                result.warnings.append(made.no_map)
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


@dataclass(frozen=True)
class DetectOptions:
    """How :func:`detect_files` scores and what it writes (the ``medmoe detect`` options).

    Attributes:
        prompt, task, strict, fpr, window: as :meth:`~medmoe.api.detector.Detector.predict_batch`.
        batch_size: images per forward pass (and per flush of the results).
        overlays: write ``<name>_overlay.png`` per image.
        maps: write ``<name>_maps.npz`` per image.
        dicom: write ``<name>_sr.dcm`` (and ``<name>_map.dcm``) per DICOM input.
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
    dicom: bool = False
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


def detect_files(detector: Detector, inputs: Sequence[InputFile], out_dir: Path, options: DetectOptions,
                 *, progress: Callable[[int], None] | None = None) -> DetectRun:
    """Score ``inputs`` and write their outputs and ``results.csv`` into ``out_dir`` (module docstring).

    A row is recorded once its image's files are written, so ``results.csv`` never names a missing
    overlay. SIGINT (Ctrl-C, also when it reaches the overlay workers as part of the process group) and
    SIGTERM stop the run after the batch in flight: the rows of every finished image are kept, the
    workers are stopped, and :attr:`DetectRun.interrupted` holds the signal.

    Args:
        detector: the model.
        inputs: the images, from :func:`~medmoe.api.inputs.collect_inputs`.
        out_dir: an existing, writable folder.
        options: what to score and write.
        progress: called with the number of images finished after each batch (resumed ones at the start).

    Raises:
        PromptError: the prompt or task given for all images is unusable.
        ConfigError: ``resume`` over results of another model or medmoe version.
    """
    detector.check_request(options.prompt, options.task, strict=options.strict, fpr=options.fpr)
    log = ResultsLog(out_dir, options.resume, detector.spec.weights_sha256[:12])
    todo = [item for item in inputs if plane_key(item.plane) not in log.earlier]
    run = DetectRun(rows=[], results=out_dir / RESULTS_NAME, total=len(inputs), resumed=len(inputs) - len(todo))
    if progress is not None and run.resumed:
        progress(run.resumed)
    pending: list[tuple[dict[str, str], Future[None] | None]] = []
    try:
        with signals_as_interrupts() as caught, warnings.catch_warnings(), \
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
                                                         maps=options.maps, dicom=options.dicom)
                            count_warnings(run.warnings, outcome.warnings)
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
        run.rows = log.finish([plane_key(item.plane) for item in inputs])
    return run


def _record_done(log: ResultsLog, pending: list[tuple[dict[str, str], Future[None] | None]],
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


def count_warnings(counts: dict[str, tuple[str, int]], notes: Iterable[str]) -> None:
    """Count warnings by kind (numbers blanked) into ``counts``: one line per kind for a run's summary."""
    for note in notes:
        kind = re.sub(r"\d+(\.\d+)?", "#", note)
        first, count = counts.get(kind, (note, 0))
        counts[kind] = (first, count + 1)


@contextmanager
def signals_as_interrupts() -> Iterator[list[int]]:
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
