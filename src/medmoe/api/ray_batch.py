"""Scoring an archive on Ray (``medmoe detect --engine ray``): the same inputs, rows and files as
:func:`~medmoe.api.batch.detect_files`, spread over a Ray cluster.

The run is a Ray Data pipeline of three stages over the input list:

1. **read** (Ray tasks): each image is decoded and preprocessed (:meth:`Detector.prepare
   <medmoe.api.detector.Detector.prepare>` with a network-less detector of the model's spec);
2. **score** (an actor pool, ``actors`` replicas): each actor loads the model once and scores batches of
   ``batch_size`` prepared images in one forward pass;
3. **write** (Ray tasks): the overlay, maps and DICOM objects of each image, then the batch's rows as one
   *part*, ``OUT/parts/part-<digest>.csv``, written atomically and named after the images it holds.

A part on disk is a finished batch: an interrupted run restarted with ``resume`` skips every image with a
row in a part (or in ``results.csv``), and a batch that Ray runs again after a worker died writes the same
part again, so no image gets two rows. At the end the parts are merged into ``results.csv`` (input order, the
columns of :data:`~medmoe.api.results_csv.COLUMNS`) and ``results.parquet``, and removed. Ray retries tasks
and restarts actors that die (a killed worker process, a lost node), so the run finishes with every image
scored once.

Ray is optional (``pip install 'medmoe[ray]'``); without an address a local Ray is started (and stopped) here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import shutil
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medmoe.api.batch import (
    DetectOptions,
    DetectRun,
    OverlayWriter,
    count_warnings,
    signals_as_interrupts,
    write_outputs,
)
from medmoe.api.detector import Detector, PreparedImage
from medmoe.api.inputs import InputFile
from medmoe.api.prompt_matching import PromptWarning
from medmoe.api.results import DetectionResult
from medmoe.api.results_csv import COLUMNS, RESULTS_NAME, plane_key, read_rows, result_row, row_key, write_results
from medmoe.api.spec import ModelSpec
from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.errors import ConfigError, MedmoeError
from medmoe.io.choice import Choice, Plane

if TYPE_CHECKING:
    import ray.data

PARTS_DIR = "parts"
PARQUET_NAME = "results.parquet"
INSTALL_HINT = "pip install 'medmoe[ray]' (Ray Data and its Arrow dependencies)"
ACTOR_START_S = 600
"""How long the model replicas may take to start (a cluster without room for them fails after this)."""


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray run goes.

    Attributes:
        address: an existing cluster's address (``ray start --head`` prints it); ``None``: start a local Ray.
        actors: model replicas (each loads the model once and scores with ``threads`` torch threads).
        threads: CPU threads of each replica's network.
    """

    address: str | None = None
    actors: int = 1
    threads: int = 1


@dataclass
class RayRun(DetectRun):
    """A :class:`~medmoe.api.batch.DetectRun` of the Ray engine, with the cluster nodes that scored images."""

    nodes: set[str] = field(default_factory=set)


class _PrepareOnly:
    """A backend that holds a model's spec and never runs: a detector of it reads and preprocesses images."""

    name = "prepare-only"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def run(self, images: np.ndarray, text: np.ndarray | None) -> Any:
        raise RuntimeError("the read stage does not run the network")


def score_on_ray(detector: Detector, model: Path, inputs: Sequence[InputFile], out_dir: Path,
                 options: DetectOptions, settings: RaySettings = RaySettings(), *,
                 progress: Callable[[int], None] | None = None) -> RayRun:
    """Score ``inputs`` on Ray and write their outputs, ``results.csv`` and ``results.parquet`` into ``out_dir``.

    Args:
        detector: the model, loaded here (it checks the request and gives the read stage its spec).
        model: its path (a run folder, an ``.onnx`` file or an installed model's folder), which every node
            must reach: each model replica loads it.
        inputs: the images, from :func:`~medmoe.api.inputs.collect_inputs`.
        out_dir: an existing, writable folder.
        options: as for :func:`~medmoe.api.batch.detect_files` (``workers`` is not used: overlays are drawn in
            the write tasks).
        settings: the cluster and the number of model replicas.
        progress: called with the number of images finished after each batch (resumed ones at the start).

    Raises:
        ConfigError: Ray is not installed, or ``resume`` over results of another model.
        PromptError: the prompt or task given for all images is unusable.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    detector.check_request(options.prompt, options.task, strict=options.strict, fpr=options.fpr)
    sha = detector.spec.weights_sha256[:12]
    parts = out_dir / PARTS_DIR
    if not options.resume:
        shutil.rmtree(parts, ignore_errors=True)  # an earlier run's results.csv stays until this one's replaces it
    earlier = _scored_rows(out_dir, sha, with_results=options.resume)
    todo = [item for item in inputs if plane_key(item.plane) not in earlier]
    run = RayRun(rows=[], results=out_dir / RESULTS_NAME, total=len(inputs), resumed=len(inputs) - len(todo))
    if progress is not None and run.resumed:
        progress(run.resumed)
    parts.mkdir(exist_ok=True)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=settings.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=False)
    try:
        with signals_as_interrupts() as caught:
            for batch in (_pipeline(todo, detector.spec, Path(model), out_dir, options, settings).iter_batches(
                    batch_size=None, batch_format="numpy") if todo else ()):
                for note in batch["warnings"]:
                    count_warnings(run.warnings, [w for w in str(note).split("\n") if w])
                run.nodes.update(str(n) for n in batch["node"])
                if progress is not None:
                    progress(len(batch["node"]))
    except KeyboardInterrupt:
        run.interrupted = caught[0] or signal.SIGINT  # the finished batches' rows are kept: --resume scores the rest
    finally:
        if started_here:
            ray.shutdown()
        rows = _scored_rows(out_dir, sha, with_results=options.resume, errors=True)
        run.rows = [rows[k] for k in (plane_key(item.plane) for item in inputs) if k in rows]
        write_results(run.rows, out_dir)
        _write_parquet(run.rows, out_dir / PARQUET_NAME)
        shutil.rmtree(parts, ignore_errors=True)
    return run


def _pipeline(todo: list[InputFile], spec: ModelSpec, model: Path, out_dir: Path, options: DetectOptions,
              settings: RaySettings) -> ray.data.Dataset:
    """The three stages (module docstring) over the images to score."""
    import ray.data

    items = [{"path": str(item.plane.path), "frame": _choice(item.plane.frame),
              "slice": _choice(item.plane.slice_index), "name": item.name} for item in todo]
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.wait_for_min_actors_s = ACTOR_START_S  # every replica up before the first batch: work is shared
    blocks = max(1, -(-len(items) // options.batch_size))
    return (ray.data.from_items(items, override_num_blocks=blocks)
            .map_batches(partial(_read, spec=spec, options=options), batch_size=options.batch_size,
                         batch_format="numpy", num_cpus=0.25, max_retries=-1)
            .map_batches(_Scorer, fn_constructor_kwargs={"model": model, "threads": settings.threads},
                         batch_size=options.batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=settings.actors, max_tasks_in_flight_per_actor=2),
                         num_cpus=0.5,
                         scheduling_strategy="SPREAD", max_restarts=-1, max_task_retries=-1)
            .map_batches(partial(_write, out_dir=out_dir, options=options), batch_size=options.batch_size,
                         batch_format="numpy", num_cpus=0.25, max_retries=-1))


def _choice(value: Choice) -> str:
    """A frame/slice choice as an Arrow-friendly text cell (``""``: none); :func:`_plane` reads it back."""
    return "" if value is None else str(value)


def _plane(path: str, frame: str, slice_index: str) -> Plane:
    def back(text: str) -> Choice:
        return None if text == "" else int(text) if text.isdigit() else text

    return Plane(Path(path), frame=back(str(frame)), slice_index=back(str(slice_index)))


_PREPARERS: dict[str, Detector] = {}
"""Per worker process, the network-less detector of each model (its text model loads once)."""


def _read(batch: dict[str, np.ndarray], *, spec: ModelSpec, options: DetectOptions) -> dict[str, np.ndarray]:
    """Stage 1: decode and preprocess; an image that cannot be read carries its error instead."""
    preparer = _PREPARERS.setdefault(spec.weights_sha256, Detector(_PrepareOnly(spec)))
    prepared: list[PreparedImage | None] = []
    errors: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        for path, frame, slice_index in zip(batch["path"], batch["frame"], batch["slice"], strict=True):
            try:
                prepared.append(preparer.prepare(_plane(path, frame, slice_index), options.prompt, options.task,
                                                 strict=options.strict, fpr=options.fpr, window=options.window))
                errors.append("")
            except MedmoeError as exc:
                prepared.append(None)
                errors.append(str(exc))
    return {**batch, "prepared": _objects(prepared), "error": np.array(errors, dtype=object)}


class _Scorer:
    """Stage 2: one model replica; scores a batch of prepared images in one forward pass."""

    def __init__(self, model: Path, threads: int) -> None:
        import ray

        self.detector = Detector.load(model, threads=threads)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = [p for p in batch["prepared"] if isinstance(p, PreparedImage)]
        scored = iter(self.detector.run(ok))
        results = [next(scored) if isinstance(p, PreparedImage) else None for p in batch["prepared"]]
        return {k: v for k, v in batch.items() if k != "prepared"} | {
            "result": _objects(results), "node": np.array([self.node] * len(results), dtype=object)}


def _write(batch: dict[str, np.ndarray], *, out_dir: Path, options: DetectOptions) -> dict[str, np.ndarray]:
    """Stage 3: each image's files, then the batch's rows as one part (atomic; named after its images)."""
    rows, notes = [], []
    with OverlayWriter(0) as drawer:
        for name, path, frame, slice_index, result, error in zip(
                batch["name"], batch["path"], batch["frame"], batch["slice"], batch["result"], batch["error"],
                strict=True):
            plane = _plane(path, frame, slice_index)
            if isinstance(result, DetectionResult):
                files, _ = write_outputs(result, str(name), out_dir, overlays=drawer if options.overlays else None,
                                         maps=options.maps, dicom=options.dicom)
                rows.append(result_row(plane, result, files))
                notes.append("\n".join(result.warnings))
            else:
                rows.append(result_row(plane, MedmoeError(str(error))))
                notes.append("")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    digest = hashlib.sha1("\n".join("\t".join(row_key(r)) for r in rows).encode()).hexdigest()[:16]
    atomic_write_text(out_dir / PARTS_DIR / f"part-{digest}.csv", buffer.getvalue())
    return {"node": batch["node"], "warnings": np.array(notes, dtype=object)}


def _objects(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _scored_rows(out_dir: Path, sha: str, *, with_results: bool,
                 errors: bool = False) -> dict[tuple[str, str, str], dict[str, str]]:
    """The rows already on disk by image: the parts of this run, after the ``results.csv`` of an earlier one
    (``with_results``); without ``errors`` only scored ones (an image whose row is an error is scored again).

    Raises:
        ConfigError: rows of another model.
    """
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    sources = [*([out_dir / RESULTS_NAME] if with_results else []), *sorted((out_dir / PARTS_DIR).glob("part-*.csv"))]
    for path in (p for p in sources if p.is_file()):
        found.update((row_key(r), r) for r in read_rows(path) if errors or not r["error"])
    others = {r["model_sha256"] for r in found.values() if r["model_sha256"]} - {sha}
    if others:
        raise ConfigError(f"the results in '{out_dir}' were written by another model ({', '.join(others)}, not "
                          f"{sha}); resume with the same model, or choose a new --out")
    return found


def _write_parquet(rows: list[dict[str, str]], path: Path) -> None:
    """``results.parquet``: the rows of ``results.csv`` (text columns), for archive-sized result sets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: [row[column] for row in rows] for column in COLUMNS})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue().to_pybytes())

