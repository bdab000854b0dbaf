"""Add a task to a trained model from a few normal scans, without retraining the rest (``medmoe add-task``).

The new run is a complete checkpoint (detect, serve, export, evaluate and calibrate work on it
unchanged): the task table and prompt embeddings gain the task, the network grows by it
(:meth:`~medmoe.model.base.AnomalyModel.grow`, for architectures registered with ``adds_tasks``; for
``feature_moe`` a :class:`~medmoe.model.feature.adapter.TaskAdapter`: its own expert, or a route over
the existing experts, and a memory of its normals), the scope head a row, the calibration the task's
scores. Every weight, buffer, threshold and calibration entry of the existing tasks is copied
unchanged, and the network keeps their rows on the original path, so their scores and maps are the
same numbers. This module imports no concrete model.

Data: the task's ``train`` normals are fitted on; its ``val`` normals, if the data has them,
calibrate it; otherwise, with at least :data:`CARVE_MIN_IMAGES` images, a seeded
:data:`ADDED_VAL_FRACTION` is carved off. ``test`` rows are never read.

Calibration from few normals: ``n`` calibration scores cannot give a p-value below ``1/(n + 1)``, so
4 validation normals could never flag anything at a false-positive rate of 0.05. Where the validation
normals alone are fewer than :data:`CALIBRATION_MIN` (the 19 that reach 0.05), the training normals'
scores join them, each taken *leave-one-image-out* where the model retrieves (the adapter's memory
without the image's own patches, as a new image meets it; the reconstruction term is in-sample, so
these p-values lean optimistic). The checkpoint's ``added_tasks`` entry and the add's log say what the
task was calibrated on and the smallest p-value it can give; every answer whose asked rate is below
that says so.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from medmoe.data.dataset import ImageDataset
from medmoe.data.manifest import Manifest, Sample, write_manifest
from medmoe.data.sources._base import list_images
from medmoe.data.splits import carve_validation, flag_duplicates
from medmoe.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from medmoe.engine.data import MANIFEST_DIR, default_cache_dir, note_gray_reading
from medmoe.engine.features import prepared_inputs
from medmoe.engine.inference import predict
from medmoe.engine.trust_fitting import fit_scope, log_scope_caveats, reference_copy_inputs, scope_distances
from medmoe.errors import CheckpointError, ConfigError, DatasetError
from medmoe.metrics import fit_threshold
from medmoe.model.base import AnomalyModel
from medmoe.model.registry import ARCHITECTURES, architecture
from medmoe.tasks import Task, TaskRegistry
from medmoe.text import PromptEmbeddingCache
from medmoe.trust.calibration import TrustCalibration

_log = logging.getLogger(__name__)

MIN_IMAGES = 4
"""Fewest readable training normals an added task may have."""
CARVE_MIN_IMAGES = 10
"""From this many training normals (and no ``val`` rows), a validation share is carved off."""
ADDED_VAL_FRACTION = 0.2
"""The share of an added task's normals carved off for validation: twice the training carve
(:data:`medmoe.data.splits.VAL_FRACTION`), since 10 % of a few normals is one or two images."""
CALIBRATION_MIN = 19
"""Fewest calibration scores whose smallest p-value, 1/20, reaches the default false-positive rate 0.05."""


@dataclass(frozen=True)
class AddTaskResult:
    """What :func:`add_task` wrote.

    Attributes:
        run_dir: the new run folder.
        task: the added task's id.
        n_train: training normals used.
        n_val: validation normals.
        calibrated_on: what the task's p-values rest on, in words.
        smallest_p: the smallest p-value the task can give (its false-positive rates below are unreachable).
        threshold: the task's percentile threshold.
        seconds: wall time of the add.
    """

    run_dir: Path
    task: str
    n_train: int
    n_val: int
    calibrated_on: str
    smallest_p: float
    threshold: float
    seconds: float


def folder_manifest(folder: Path, task: str) -> Manifest:
    """A manifest of every image under ``folder`` (recursively) as training normals of ``task``, with
    the usual duplicate flags (the ``folder`` layout's ``train/normal`` … is read by its source)."""
    images = list_images(folder, recursive=True)
    if not images:
        raise DatasetError(f"'{folder}' holds no image files (PNG, JPEG, TIFF, BMP, DICOM, NIfTI)")
    root = folder.resolve()
    samples = [Sample(path=p.resolve().relative_to(root).as_posix(), task=task, label=0, split="train")
               for p in images]
    return flag_duplicates(Manifest(root=root, samples=samples))


def add_task(model_run: str | Path, task: Task, manifests: list[Manifest], out: str | Path, *,
             expert: str = "expert", seed: int = 0, progress: bool = True) -> AddTaskResult:
    """Add ``task`` to the ``feature_moe`` run ``model_run`` from the task's normals in ``manifests``
    and write the new run to ``out`` (module docstring).

    Args:
        expert: ``expert`` (a decoder of the task's own) or ``route`` (weights over the existing experts).
        seed: seeds the validation carve, the memory's coreset and the adapter's training.

    Raises:
        ConfigError: not a prompt-routed ``feature_moe`` run, an existing task id, a channel mismatch,
            a different ``expert`` than earlier adds, or ``out`` not empty.
        CheckpointError: the run has no trust outputs (``medmoe calibrate`` it first).
        DatasetError: fewer than :data:`MIN_IMAGES` readable training normals of the task.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"'{out}' exists and is not empty; choose a new folder for the new run")
    checkpoint = load_checkpoint(model_run)
    config, tasks, model = checkpoint.config, checkpoint.tasks, checkpoint.model
    _check(checkpoint, task, expert)
    assert checkpoint.prompt_embeddings is not None  # _check: a prompt-routed run
    assert checkpoint.scope is not None and checkpoint.calibration is not None

    rows = _task_rows(manifests, task.id, seed)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    split_inputs = {}
    for split in ("train", "val"):
        entries = [(m, s) for m in rows for s in m.select(split=split)]
        if not entries:
            split_inputs[split] = torch.zeros(0)
            continue
        dataset = ImageDataset(entries, TaskRegistry([task]), resolution=config.model.resolution, cache_dir=cache,
                               with_masks=False, channels=config.model.in_channels)
        failures = dataset.check(progress=progress)
        if failures and split == "train" and len(entries) - len(failures) < MIN_IMAGES:
            raise DatasetError(f"only {len(entries) - len(failures)} of {len(entries)} training images of "
                               f"{task.id!r} are readable (first problem: '{failures[0][0]}': {failures[0][1]}); "
                               f"at least {MIN_IMAGES} are needed")
        if failures:
            bad = {str(path) for path, _ in failures}
            dataset = ImageDataset([e for e in entries if str(e[0].resolve(e[1].path)) not in bad],
                                   TaskRegistry([task]), resolution=config.model.resolution, cache_dir=cache,
                                   with_masks=False, channels=config.model.in_channels)
        images = dataset.materialize(progress=progress).images
        split_inputs[split] = prepared_inputs(model, images, cache_dir=cache, progress=progress)
        if split == "train":
            copy_x = reference_copy_inputs(model, images, torch.zeros(len(images), dtype=torch.long))
    train_x, val_x = split_inputs["train"], split_inputs["val"]
    if len(train_x) < MIN_IMAGES:
        raise DatasetError(f"{len(train_x)} training normals of {task.id!r}; at least {MIN_IMAGES} are needed")

    new_tasks = TaskRegistry([*tasks, task])
    embedding = torch.from_numpy(PromptEmbeddingCache(config.train.text_encoder).embed([task.prompt]))
    embeddings = torch.cat([checkpoint.prompt_embeddings, embedding.to(checkpoint.prompt_embeddings.dtype)])
    new_model, grown = model.grow(embeddings, train_x, expert=expert, seed=seed, lr=config.train.lr)
    new_config = replace(config, model=grown)

    scores, calibrated_on = _calibration_scores(new_model, embedding.float(), train_x, val_x)
    _log.warning("%s: calibrated on %s; its smallest p-value is %.3g", task.id, calibrated_on, 1 / (len(scores) + 1))
    calib_x = val_x if len(val_x) else train_x
    threshold = fit_threshold(scores, config.train.threshold_percentile)
    scope = checkpoint.scope
    head = scope.extended(fit_scope(new_model, new_config.model, train_x, torch.zeros(len(train_x), dtype=torch.long),
                                    1, copy_inputs=copy_x, kind=scope.kind))
    own = np.sqrt(scope_distances(new_model, new_config.model, head, calib_x)[:, -1])
    old = checkpoint.calibration
    calibration = TrustCalibration(scores={**old.scores, task.id: sorted(float(s) for s in scores)},
                                   scope_scale={**old.scope_scale, task.id: float(np.median(own))},
                                   scope_limit=old.scope_limit, source=old.source)
    log_scope_caveats(calibration, [task.id])
    info = {**checkpoint.info, "added_tasks": [*checkpoint.info.get("added_tasks", []), {
        "task": task.id, "expert": expert, "n_train": len(train_x), "n_val": len(val_x), "seed": seed,
        "calibrated_on": calibrated_on}]}
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model=new_model, config=new_config, tasks=new_tasks, prompt_embeddings=embeddings,
                    thresholds={**checkpoint.thresholds, task.id: threshold}, info=info, scope=head,
                    calibration=calibration)
    _copy_manifests(Path(model_run), rows, out, task.id)
    return AddTaskResult(out, task.id, len(train_x), len(val_x), calibrated_on, 1 / (len(scores) + 1), threshold,
                         time.perf_counter() - started)


def _calibration_scores(model: AnomalyModel, embedding: torch.Tensor, train_x: torch.Tensor,
                        val_x: torch.Tensor) -> tuple[np.ndarray, str]:
    """The added task's calibration scores and what they are, in words (module docstring): its validation
    normals' scores, joined by its training normals' where those alone are fewer than :data:`CALIBRATION_MIN`."""
    val_scores = predict(model, val_x, embedding.expand(len(val_x), -1), prepared=True).score if len(val_x) \
        else np.zeros(0)
    if len(val_scores) >= CALIBRATION_MIN:
        return val_scores, f"{len(val_scores)} validation normals"
    own = model.held_out_scores(train_x, embedding)
    train_scores = own if own is not None else predict(model, train_x, embedding.expand(len(train_x), -1),
                                                       prepared=True).score
    how = ("scored leave-one-image-out (memory without their own patches)" if own is not None
           else "scored in-sample (optimistic p-values)")
    words = f"{len(train_scores)} training normals {how}"
    if len(val_scores):
        words = f"{len(val_scores)} validation normals and {words}"
    return np.concatenate([val_scores, train_scores]), words


def _check(checkpoint: Checkpoint, task: Task, expert: str) -> None:
    """Refuse what ``add_task`` cannot do, each with one message."""
    config, tasks = checkpoint.config.model, checkpoint.tasks
    if not architecture(config.architecture).adds_tasks or not config.prompt:
        grows = ", ".join(a.name for a in ARCHITECTURES.values() if a.adds_tasks)
        raise ConfigError(f"add-task needs a prompt-routed run of an architecture that grows ({grows}); this one is "
                          f"{config.architecture!r}" + ("" if config.prompt else " without prompts"))
    if task.id in tasks:
        raise ConfigError(f"task {task.id!r} is already in the model ({', '.join(tasks.ids)}); pick a new id")
    note_gray_reading(TaskRegistry([task]), checkpoint.config)
    checkpoint.model.check_growth(expert)
    if checkpoint.scope is None or checkpoint.calibration is None:
        raise CheckpointError("the run has no trust outputs; run 'medmoe calibrate --model RUN' on it first")


def _task_rows(manifests: list[Manifest], task: str, seed: int) -> list[Manifest]:
    """The manifests' rows of ``task``, with a validation carve when there is no ``val`` and enough
    training images (``test`` rows are kept for evaluating the new run, never read here)."""
    rows = [Manifest(root=m.root, samples=[s for s in m.samples if s.task == task]) for m in manifests]
    rows = [m for m in rows if m.samples]
    if not rows:
        raise DatasetError(f"the data holds no training normals of task {task!r} (rows with task={task})")
    n_train = sum(s.split == "train" for m in rows for s in m.samples)
    if not n_train:
        raise DatasetError(f"the data holds no training normals of task {task!r} (only val/test rows)")
    has_val = any(s.split == "val" for m in rows for s in m.samples)
    if not has_val and n_train >= CARVE_MIN_IMAGES:
        rows = [carve_validation(m, ADDED_VAL_FRACTION, seed) for m in rows]
    return rows


def _copy_manifests(model_run: Path, rows: list[Manifest], out: Path, task: str) -> None:
    """The old run's manifests (when it has them) and the added task's rows (with its test rows), so
    the new run is evaluable like any other."""
    source = model_run / MANIFEST_DIR
    if source.is_dir():
        shutil.copytree(source, out / MANIFEST_DIR, dirs_exist_ok=True)
    for i, manifest in enumerate(rows):
        write_manifest(manifest, out / MANIFEST_DIR / f"{task}{'' if i == 0 else f'-{i}'}.csv")
