"""Training: mixed-task batches of normal images, validation-loss model selection, exact resume.

The same function runs on one process or under ``torchrun`` (DistributedDataParallel; gloo on CPU,
NCCL on CUDA): every process sees a disjoint shard of each epoch's permutation, the global batch is
``train.batch_size``, and rank 0 validates and writes files.

Files in the run folder:

- ``model.safetensors`` + ``model.json``: the selected model (lowest validation loss; the test split
  is never looked at) with per-task thresholds fitted on validation normals.
- ``checkpoints/last.pt``: resume state after the last finished epoch (model, optimizer, history).
- ``history.json``: per-epoch training and validation losses and timings.
- ``config.yaml``: the resolved run configuration; ``manifests/``: the data it was trained on.

:data:`RUN_CONTENTS` names them (and ``eval/``, where the README's ``medmoe evaluate`` example writes):
``medmoe train --overwrite`` removes them before training, so nothing of the replaced run is left.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.data.dataset import Batch
from medmoe.data.manifest import Manifest
from medmoe.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from medmoe.engine.config import RunConfig, TrainConfig, with_text_dim
from medmoe.engine.data import default_cache_dir, load_split, note_gray_reading, select_tasks
from medmoe.engine.distributed import DistInfo, barrier, setup_distributed, teardown_distributed
from medmoe.engine.features import prepared_inputs
from medmoe.engine.inference import predict, task_text_embeddings
from medmoe.engine.trust_fitting import TRAINING_SOURCE, VALIDATION_SOURCE, calibrate, fit_scope, reference_copy_inputs
from medmoe.errors import CheckpointError, ConfigError, DatasetError
from medmoe.metrics import fit_threshold
from medmoe.model.base import AnomalyModel
from medmoe.model.losses import LossParts
from medmoe.model.registry import architecture, create_model
from medmoe.tasks import TaskRegistry, default_registry, load_task_file
from medmoe.text import PromptEmbeddingCache
from medmoe.trust import DEFAULT_FPR
from medmoe.trust.calibration import deployed_threshold

_log = logging.getLogger(__name__)
RESUME_FILE = Path("checkpoints") / "last.pt"
RUN_CONTENTS = ("model.json", "model.safetensors", "config.yaml", "history.json", "checkpoints", "manifests", "eval")
"""What a run folder holds (module docstring)."""


def clear_run(run_dir: Path) -> list[str]:
    """Remove :data:`RUN_CONTENTS` from ``run_dir`` (nothing else in it); returns the names removed."""
    removed = []
    for name in RUN_CONTENTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed
RESUME_INTERVAL_S = 30.0
"""The resume state is written after an epoch when this long has passed since the last write, and
after the last epoch: tiny training sets run many short epochs, and an interruption then costs at
most this much training."""


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        thresholds: per task, the score threshold ``medmoe detect`` decides at with the default false-positive
            rate (:data:`~medmoe.trust.DEFAULT_FPR`; the conformal threshold of the calibration).
    """

    run_dir: Path
    best_epoch: int
    best_val_loss: float
    thresholds: dict[str, float]
    seconds: float
    history: list[dict[str, float]]


def task_registry(config: RunConfig) -> TaskRegistry:
    """The default tasks plus those of ``data.tasks_file``."""
    return load_task_file(config.data.tasks_file) if config.data.tasks_file else default_registry()


def prompt_embeddings_for(config: RunConfig, tasks: TaskRegistry) -> torch.Tensor | None:
    """Frozen embeddings ``(T, D)`` of the tasks' prompts, or ``None`` if the model ignores prompts
    (then the text model is never loaded)."""
    if not config.model.prompt:
        return None
    cache = PromptEmbeddingCache(config.train.text_encoder)
    return torch.from_numpy(cache.embed(tasks.prompts))


def make_optimizer(model: nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """The paper's Adam (``tc.lr``, ``tc.weight_decay``).

    On CPU and CUDA it is the fused implementation: the same update, computed in one pass over each
    parameter instead of ~10 elementwise passes (tested allclose to the default; ~3-5x faster steps on
    CPU, where the decoders' stacked FC weights make the step memory-bound; ``benchmarks/speed.py``).
    """
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)


class _Progress(TypedDict):
    """Where a training run stands (kept in the resume file)."""

    epoch: int
    best_val_loss: float
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float
    best_state: dict[str, torch.Tensor] | None


def _start(seconds: float = 0.0, best_val_loss: float = math.inf) -> _Progress:
    """The progress of a run that has not trained yet."""
    return {"epoch": 0, "best_val_loss": best_val_loss, "best_epoch": 0, "history": [], "seconds": seconds,
            "best_state": None}


def train(config: RunConfig, manifests: list[Manifest], run_dir: str | Path, *,
          resume: bool = False, progress: bool = True, provenance: Mapping[str, str] | None = None,
          init: str | Path | None = None) -> TrainResult:
    """Train a model on the normal images of ``manifests`` and write a checkpoint to ``run_dir``.

    Args:
        config: the run configuration.
        manifests: data; ``train`` rows are trained on, ``val`` rows select the model and fit the
            thresholds; ``test`` rows are ignored.
        run_dir: output folder.
        resume: continue from ``run_dir/checkpoints/last.pt`` (same config required).
        progress: show progress bars.
        provenance: what made the run, stored in the checkpoint's ``info`` (``{"profile": "cpu-feat"}``).
        init: a trained model (run folder) to start from: the run takes its model settings (``config.model``
            is replaced) and its learned weights; memories, feature statistics, thresholds and calibration
            are fitted on ``manifests`` as in any run (:func:`initialise_from`).
    """
    run_dir = Path(run_dir)
    provenance = dict(provenance or {})
    start: Checkpoint | None = None
    if init is not None:
        start = load_checkpoint(init)
        config = replace(config, model=start.config.model)
        provenance["initialised_from"] = f"{start.label} (sha256 {start.weights_sha256[:12]})"
    dist = setup_distributed(config.train.device)
    try:
        return _train(config, manifests, run_dir, dist, resume=resume, progress=progress and dist.is_main,
                      provenance=provenance, start=start)
    finally:
        teardown_distributed()


def _train(config: RunConfig, manifests: list[Manifest], run_dir: Path, dist: DistInfo, *,
           resume: bool, progress: bool, provenance: dict[str, str], start: Checkpoint | None) -> TrainResult:
    tc = config.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    tasks = select_tasks(task_registry(config), manifests, tc.tasks)
    note_gray_reading(tasks, config)
    if architecture(config.model.architecture).experts_per_task and config.model.num_experts < len(tasks):
        raise ConfigError(f"{len(tasks)} tasks need at least as many experts; model.num_experts="
                          f"{config.model.num_experts}")
    embeddings = prompt_embeddings_for(config, tasks)
    if embeddings is not None:
        config = with_text_dim(config, embeddings.shape[1])

    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    train_data = load_split(manifests, tasks, "train", config, cache_dir, progress, dist)
    val_data = load_split(manifests, tasks, "val", config, cache_dir, progress, dist)
    if len(train_data.images) < 2:
        raise DatasetError("fewer than 2 training images: check the manifests' train split")

    torch.manual_seed(tc.seed)
    model: AnomalyModel = create_model(config.model).to(dist.device)
    # the frozen part (a pretrained trunk) runs once per image, cached; training sees its output
    train_images = train_data.images  # the images themselves, for the scope head's reference copies
    train_data = _prepared(model, train_data, cache_dir, dist, progress)
    val_data = _prepared(model, val_data, cache_dir, dist, progress)
    fit_started = time.perf_counter()
    if not resume:  # feature statistics and memories (a resumed run has them in its state)
        model.fit_data(train_data.images.to(dist.device), train_data.task_indices.to(dist.device),
                       None if embeddings is None else embeddings.to(dist.device), seed=tc.seed)
        if start is not None:
            initialise_from(model, start)
    if dist.is_main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    if not model.trains_by_gradient():
        return _memory_model_checkpoint(config, model, tasks, embeddings, train_data, train_images, val_data,
                                        run_dir, dist, seconds=time.perf_counter() - fit_started, provenance=provenance)
    optimizer = make_optimizer(model, tc, dist.device)
    state = _start()
    resume_path = run_dir / RESUME_FILE
    if resume:
        state = _load_resume(resume_path, config, model, optimizer)
    wrapped = DistributedDataParallel(model) if dist.world_size > 1 else model

    text = embeddings.to(dist.device) if embeddings is not None else None
    per_rank = max(2, tc.batch_size // dist.world_size)
    epochs = range(state["epoch"], tc.epochs)
    bar = tqdm(epochs, desc="train", unit="epoch", disable=not progress, initial=state["epoch"],
               total=tc.epochs, dynamic_ncols=True)
    last_save = time.perf_counter()
    for epoch in bar:
        started = time.perf_counter()
        train_loss = _train_epoch(wrapped, optimizer, train_data, text, config, epoch, per_rank, dist)
        record = {"epoch": epoch + 1, **train_loss}
        if dist.is_main:
            ranks = tc.selection == "val_loss" or epoch + 1 == tc.epochs  # 'last' has nothing to rank before
            record["val_loss"] = _validation_loss(model, val_data, text, config, dist.device) if ranks else math.nan
            selection_loss = record["val_loss"] if len(val_data.images) else train_loss["loss"]
            if tc.selection == "last" or selection_loss < state["best_val_loss"]:
                state["best_val_loss"], state["best_epoch"] = selection_loss, epoch + 1
                state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            record["seconds"] = time.perf_counter() - started
            state["seconds"] += record["seconds"]
            state["history"].append(record)
            state["epoch"] = epoch + 1
            if epoch + 1 == tc.epochs or time.perf_counter() - last_save >= RESUME_INTERVAL_S:
                _save_resume(resume_path, config, model, optimizer, state)
                last_save = time.perf_counter()
            bar.set_postfix(loss=f"{record['loss']:.4f}", rn=f"{record['routing']:.3f}",
                            re=f"{record['reconstruction']:.4f}", val=f"{record['val_loss']:.4f}")
        barrier(dist)
    bar.close()

    result = None
    if dist.is_main:
        result = _finish(config, model, tasks, embeddings, state, val_data, train_data, train_images, run_dir,
                         dist.device, provenance)
    barrier(dist)
    return result if result is not None else TrainResult(run_dir, state["best_epoch"], state["best_val_loss"],
                                                         {}, state["seconds"], state["history"])


def initialise_from(model: AnomalyModel, start: Checkpoint) -> list[str]:
    """Copy ``start``'s learned weights (its parameters, not its buffers: memories and feature statistics
    belong to the data) into ``model`` wherever a name and shape match; return the names copied.

    Raises:
        ConfigError: none of ``start``'s learned weights fits ``model``.
    """
    theirs = dict(start.model.named_parameters())
    copied = []
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            source = theirs.get(name)
            if parameter.requires_grad and source is not None and source.shape == parameter.shape:
                parameter.copy_(source.to(parameter.device))
                copied.append(name)
    if not copied:
        raise ConfigError(f"--init: none of the learned weights of '{start.path}' fits this model")
    _log.info("initialised %d learned tensors from %s", len(copied), start.label)
    return copied


def _memory_model_checkpoint(config: RunConfig, model: AnomalyModel, tasks: TaskRegistry,
                             embeddings: torch.Tensor | None, train_data: Batch, train_images: torch.Tensor,
                             val_data: Batch, run_dir: Path, dist: DistInfo, *, seconds: float,
                             provenance: dict[str, str]) -> TrainResult:
    """A model without trainable parameters (PatchCore, feature 1-NN), its memory filled by
    ``fit_data``: fit thresholds and write the checkpoint (rank 0)."""
    state = _start(seconds, best_val_loss=math.nan)
    result = None
    if dist.is_main:
        result = _finish(config, model, tasks, embeddings, state, val_data, train_data, train_images, run_dir,
                         dist.device, provenance)
    barrier(dist)
    return result if result is not None else TrainResult(run_dir, 0, math.nan, {}, state["seconds"], [])


def _prepared(model: AnomalyModel, data: Batch, cache_dir: Path, dist: DistInfo, progress: bool) -> Batch:
    """``data`` with its images replaced by ``model.prepare`` of them (trunk features; the images
    themselves for pixel models); rank 0 fills the feature cache first."""
    if model.frozen_identity() is None:
        return data
    if not dist.is_main:
        barrier(dist)
    inputs = prepared_inputs(model, data.images, cache_dir=cache_dir, device=dist.device, progress=progress)
    if dist.is_main:
        barrier(dist)
    return replace(data, images=inputs)


def batch_loss(model: nn.Module, inputs: torch.Tensor, task_ids: torch.Tensor, text: torch.Tensor | None,
               config: RunConfig) -> LossParts:
    """The model's own loss (Eq. 6 and its terms) on one batch of prepared inputs."""
    core = cast(AnomalyModel, model.module if isinstance(model, DistributedDataParallel) else model)
    out = model(inputs, task_text_embeddings(text, task_ids), prepared=True)  # through DDP's forward
    return core.loss(out, inputs, task_ids, config.train.alpha, config.train.beta)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Optimisation steps of one single-process epoch over ``n_images``: full batches only, or one
    smaller batch when there are fewer images than a batch (as :func:`_train_epoch` does)."""
    return max(n_images // batch_size, 1)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Batch, text: torch.Tensor | None,
                 config: RunConfig, epoch: int, per_rank: int, dist: DistInfo) -> dict[str, float]:
    """One pass over a seeded permutation (seed, epoch) — what makes resume exact."""
    tc = config.train
    generator = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
    order = torch.randperm(len(data.images), generator=generator)
    usable = len(order) // (per_rank * dist.world_size) * per_rank * dist.world_size
    if usable == 0:  # fewer images than one global batch: one smaller batch per process
        usable = len(order) // dist.world_size * dist.world_size
        per_rank = usable // dist.world_size
    shard = order[:usable][dist.rank::dist.world_size]
    model.train()
    sums = {"loss": 0.0, "routing": 0.0, "reconstruction": 0.0}
    steps = 0
    for start in range(0, len(shard) - per_rank + 1, per_rank):
        index = shard[start:start + per_rank]
        x = data.images[index].to(dist.device, non_blocking=True)
        task_ids = data.task_indices[index].to(dist.device)
        parts = batch_loss(model, x, task_ids, text, config)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        sums["loss"] += parts.total.item()
        sums["routing"] += parts.routing.item()
        sums["reconstruction"] += parts.reconstruction.item()
        steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()}


@torch.no_grad()
def _validation_loss(model: nn.Module, data: Batch, text: torch.Tensor | None, config: RunConfig,
                     device: torch.device) -> float:
    """Mean Eq. 6 loss over the validation normals (NaN without validation data)."""
    if len(data.images) == 0:
        return math.nan
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data.images), 256):
        x = data.images[start:start + 256].to(device)
        task_ids = data.task_indices[start:start + 256].to(device)
        total += batch_loss(model, x, task_ids, text, config).total.item() * len(x)
        count += len(x)
    return total / count


def fit_thresholds(scores: np.ndarray, task_indices: np.ndarray, tasks: TaskRegistry,
                   percentile: float) -> dict[str, float]:
    """Per task, the ``percentile`` of the scores ``(n,)`` of normal images of task ``task_indices (n,)``."""
    return {task.id: fit_threshold(scores[task_indices == i], percentile) if np.any(task_indices == i)
            else math.nan for i, task in enumerate(tasks)}


def _finish(config: RunConfig, model: AnomalyModel, tasks: TaskRegistry, embeddings: torch.Tensor | None,
            state: _Progress, val_data: Batch, train_data: Batch, train_images: torch.Tensor, run_dir: Path,
            device: torch.device, provenance: dict[str, str]) -> TrainResult:
    """Restore the selected weights, fit thresholds, the scope head (on the training normals'
    prepared inputs ``train_data`` and reference copies of their ``train_images``) and the trust
    calibration on validation normals (training normals without validation data), write the checkpoint."""
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    text = embeddings.to(device) if embeddings is not None else None
    source = val_data if len(val_data.images) else train_data
    scores = predict(model, source.images, task_text_embeddings(text, source.task_indices), device=device,
                     prepared=True).score
    thresholds = fit_thresholds(scores, source.task_indices.numpy(), tasks, config.train.threshold_percentile)
    missing = [t for t, v in thresholds.items() if math.isnan(v)]
    if missing:
        _log.warning("no validation normals for %s: their thresholds are undefined", missing)
    copies = reference_copy_inputs(model, train_images, train_data.task_indices, device=device)
    scope = fit_scope(model, config.model, train_data.images, train_data.task_indices, len(tasks),
                      copy_inputs=copies, device=device)
    calibration = calibrate(model, config.model, scope, tasks.ids, source.images, source.task_indices, scores,
                            train_inputs=train_data.images, train_task_indices=train_data.task_indices,
                            source=VALIDATION_SOURCE if len(val_data.images) else TRAINING_SOURCE, device=device)
    rule = (f"p{config.train.threshold_percentile:g} of validation-normal scores" if len(val_data.images)
            else f"p{config.train.threshold_percentile:g} of TRAINING-normal scores (no validation data)")
    info = {
        "best_epoch": state["best_epoch"], "best_val_loss": state["best_val_loss"],
        "epochs": config.train.epochs, "seed": config.train.seed, "train_seconds": round(state["seconds"], 1),
        "n_train": len(train_data.images), "n_val": len(val_data.images), "threshold_rule": rule,
        "selection": _selection_rule(config, model) + "; the test split is never used", **provenance,
    }
    model.to("cpu")
    save_checkpoint(run_dir, model=model, config=config, tasks=tasks, prompt_embeddings=embeddings,
                    thresholds=thresholds, info=info, scope=scope.cpu(), calibration=calibration)
    atomic_write_text(run_dir / "history.json", json.dumps(state["history"], indent=1) + "\n")
    deployed = {task: deployed_threshold(calibration, thresholds, task, DEFAULT_FPR)[0] for task in tasks.ids}
    return TrainResult(run_dir, state["best_epoch"], state["best_val_loss"], deployed, state["seconds"],
                       state["history"])


def _selection_rule(config: RunConfig, model: AnomalyModel) -> str:
    if not model.trains_by_gradient():
        return "no training: a memory of the training normals"
    return "lowest validation loss (Eq. 6) over epochs" if config.train.selection == "val_loss" else "the last epoch"


def _save_resume(path: Path, config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 state: _Progress) -> None:
    buffer = io.BytesIO()
    torch.save({"config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "state": state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_resume(path: Path, config: RunConfig, model: nn.Module,
                 optimizer: torch.optim.Optimizer) -> _Progress:
    if not path.is_file():
        raise CheckpointError(f"cannot resume: '{path}' does not exist (was the run started in this folder?)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    trained = RunConfig.from_dict(saved["config"], stored=True)  # an earlier version's record read as today's
    if _without_epochs(trained.to_dict()) != _without_epochs(config.to_dict()):
        raise CheckpointError(f"cannot resume from '{path}': it was trained with a different configuration "
                              "(only train.epochs may change on resume)")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["state"]


def _without_epochs(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "epochs"}}
