"""Fit what a trained model's results may claim: its scope head and its trust calibration.

Called when training finishes (:func:`medmoe.engine.train.train`) and by ``medmoe calibrate`` for
runs trained before trust outputs existed. The scope head is fitted on the **training** normals
and copies of them with a synthetic lesion and with an acquisition change (its references,
:func:`reference_copies`); the p-values and the scope limit on the **validation** normals, which the model
and the head never saw — or, without validation data, on the training normals, which the
calibration's ``source`` then says (p-values from training scores are optimistic for models that
memorise their training images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmoe.data.acquisition import acquisition_shift
from medmoe.data.anomalies import synthesize_anomalies
from medmoe.data.manifest import Manifest
from medmoe.engine.checkpoint import load_checkpoint, save_checkpoint
from medmoe.engine.data import default_cache_dir, load_split, run_manifests
from medmoe.engine.features import prepared_inputs
from medmoe.engine.inference import predict, task_text_embeddings
from medmoe.errors import DatasetError
from medmoe.model.config import ModelConfig
from medmoe.trust.calibration import TrustCalibration, fit_calibration
from medmoe.trust.scope import DEFAULT_DESCRIPTOR, ScopeHead, ScopeTrunk, descriptor

SCOPE_LESION_AREA = (0.01, 0.2)
"""Share of the image a synthetic lesion covers in the lesion copies that join the scope references
(:func:`reference_copies`)."""
SCOPE_LESION_SEED = 1
"""Seed of those lesions (the validation lesions of ``benchmarks/trust_design.py`` use 0)."""
SCOPE_ACQUISITION_SEED = 1
"""Seed of the acquisition-changed copies that join the scope references (validation copies use 0)."""

_log = logging.getLogger(__name__)

VALIDATION_SOURCE = "validation normals"
TRAINING_SOURCE = "training normals (no validation data: p-values are optimistic)"


@torch.no_grad()
def _batched(inputs: torch.Tensor, batch_size: int, device: torch.device | str,
             fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` over ``inputs`` in batches on ``device``, concatenated on the CPU."""
    parts = [fn(inputs[i:i + batch_size].to(device)).cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(parts)


def lesion_copies(images: torch.Tensor, task_indices: torch.Tensor, *, seed: int = SCOPE_LESION_SEED) -> torch.Tensor:
    """A copy of every image ``(n, C, R, R)`` in [0, 1] with one synthetic lesion of
    :data:`SCOPE_LESION_AREA` (:func:`~medmoe.data.anomalies.synthesize_anomalies`, task by task, so a
    pasted patch comes from another normal of the same task)."""
    out = images.clone()
    rng = np.random.default_rng(seed)
    for t in task_indices.unique().tolist():
        rows = torch.nonzero(task_indices == t).flatten()
        lesioned, _ = synthesize_anomalies(images[rows].numpy(), rng, area=SCOPE_LESION_AREA)
        out[rows] = torch.from_numpy(lesioned).to(out.dtype)
    return out


def reference_copies(images: torch.Tensor, task_indices: torch.Tensor) -> torch.Tensor:
    """The copies of training normals ``(n, C, R, R)`` that join the scope references, ``(2 n, C, R, R)``:
    first :func:`lesion_copies`, then one copy of each under an acquisition change
    (:func:`~medmoe.data.acquisition.acquisition_shift`, seed :data:`SCOPE_ACQUISITION_SEED`)."""
    shifted = acquisition_shift(images.numpy(), np.random.default_rng(SCOPE_ACQUISITION_SEED))
    return torch.cat([lesion_copies(images, task_indices), torch.from_numpy(shifted).to(images.dtype)])


def fit_scope(model: nn.Module, config: ModelConfig, inputs: torch.Tensor, task_indices: torch.Tensor,
              n_tasks: int, *, copy_inputs: torch.Tensor | None = None, device: torch.device | str = "cpu",
              batch_size: int = 128, kind: str = DEFAULT_DESCRIPTOR) -> ScopeHead:
    """The scope head of ``model`` from its training normals (``inputs``: the model's prepared inputs,
    i.e. trunk features for feature models and images for pixel models; ``task_indices (n,)``) on
    the descriptor ``kind``.

    ``copy_inputs``: the prepared inputs of copies of the same normals, ``k`` blocks of ``n`` in the
    normals' order (:func:`reference_copy_inputs`: a synthetic lesion, an acquisition change); each
    task's references then hold them too, so its covariance spans the directions a lesion or another
    scanner moves the descriptor in, and such a scan stays nearer to its task than a change of
    modality (``benchmarks/results/trust-design.md``, ``maha_lesion_shift``)."""
    trunk = ScopeTrunk(model, config)

    def rows_of(x: torch.Tensor) -> np.ndarray:
        return _batched(x, batch_size, device, lambda b: descriptor(trunk(b, b), kind)).double().numpy()

    rows, index = rows_of(inputs), task_indices.numpy()
    missing = [t for t in range(n_tasks) if not np.any(index == t)]
    if missing:
        raise ValueError(f"no training normals for task indices {missing}")
    if copy_inputs is not None:
        if len(inputs) == 0 or len(copy_inputs) % len(inputs):
            raise ValueError(f"{len(copy_inputs)} reference copies is no whole number of copies of "
                             f"{len(inputs)} training normals")
        copies = len(copy_inputs) // len(inputs)
        rows, index = np.concatenate([rows, rows_of(copy_inputs)]), np.tile(index, copies + 1)
    return ScopeHead.fit([rows[index == t] for t in range(n_tasks)], kind)


def reference_copy_inputs(model: nn.Module, images: torch.Tensor, task_indices: torch.Tensor, *,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """The prepared inputs (:func:`~medmoe.engine.features.prepared_inputs`, never cached) of
    :func:`reference_copies` of training normals ``images``, for :func:`fit_scope`."""
    return prepared_inputs(model, reference_copies(images, task_indices), cache_dir=None, device=device,
                           progress=False)


def selected_copies(copy_inputs: torch.Tensor, keep: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The rows of ``copy_inputs`` (``k`` blocks of copies of ``n`` normals, as :func:`fit_scope` takes
    them) that copy the normals a boolean ``keep (n,)`` selects, in the same block layout."""
    keep = torch.as_tensor(keep, dtype=torch.bool)
    return copy_inputs[keep.repeat(len(copy_inputs) // len(keep))]


def scope_distances(model: nn.Module, config: ModelConfig, head: ScopeHead, inputs: torch.Tensor, *,
                    device: torch.device | str = "cpu", batch_size: int = 128) -> np.ndarray:
    """Squared scope distances ``(n, T)`` of prepared ``inputs`` (as in :func:`fit_scope`)."""
    trunk = ScopeTrunk(model, config)
    head = head.to(device)
    return _batched(inputs, batch_size, device, lambda x: head(trunk(x, x))).numpy().astype(np.float64)


def calibrate(model: nn.Module, config: ModelConfig, head: ScopeHead, task_ids: list[str], inputs: torch.Tensor,
              task_indices: torch.Tensor, scores: np.ndarray, *, train_inputs: torch.Tensor,
              train_task_indices: torch.Tensor, source: str = VALIDATION_SOURCE,
              device: torch.device | str = "cpu") -> TrustCalibration:
    """The trust calibration from calibration normals (their prepared ``inputs``, task indices and
    the model's ``scores`` on them); tasks without any take their scope scale from their training
    normals (``train_inputs``, ``train_task_indices``) and get no p-values."""
    distances = scope_distances(model, config, head, inputs, device=device)
    present = set(task_indices.tolist())
    missing = torch.tensor([int(t) not in present for t in train_task_indices.tolist()], dtype=torch.bool)
    extra = scope_distances(model, config, head, train_inputs[missing], device=device) if missing.any() else None
    calibration = fit_calibration(task_ids, np.asarray(scores, dtype=np.float64), task_indices.numpy(), distances,
                                  source, extra_index=train_task_indices[missing].numpy(), extra_distances=extra)
    log_scope_caveats(calibration, task_ids)
    return calibration


def log_scope_caveats(calibration: TrustCalibration, task_ids: Sequence[str]) -> None:
    """Warn, once per task, where the scope decision rests on few calibration normals
    (:meth:`~medmoe.trust.calibration.TrustCalibration.scope_caveat`)."""
    for task in task_ids:
        caveat = calibration.scope_caveat(task)
        if caveat:
            _log.warning("out-of-scope verdicts near %r: %s", task, caveat)


def calibrate_run(run_dir: str | Path, manifests: Sequence[Manifest] | None = None, *,
                  device: torch.device | str = "cpu", progress: bool = True) -> TrustCalibration:
    """Fit the scope head and the trust calibration of a trained run and rewrite its checkpoint
    (weights unchanged; ``medmoe calibrate``). ``manifests``: the run's own (its ``manifests/``)
    unless given; their ``train`` and ``val`` rows of the run's tasks are used, never ``test``."""
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir, map_location=device)
    manifests = list(manifests) if manifests is not None else run_manifests(run_dir)
    model, config, tasks = checkpoint.model, checkpoint.config, checkpoint.tasks
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    splits = {}
    for split in ("train", "val"):
        batch = load_split(manifests, tasks, split, config, cache_dir, progress)
        inputs = prepared_inputs(model, batch.images, cache_dir=cache_dir, device=device, progress=progress)
        splits[split] = (inputs, batch.task_indices)
        if split == "train":
            copies = reference_copy_inputs(model, batch.images, batch.task_indices, device=device)
    if len(splits["train"][0]) == 0:
        raise DatasetError(f"no training images of the run's tasks in the manifests of '{run_dir}'")
    (train_x, train_t), (val_x, val_t) = splits["train"], splits["val"]
    calib_x, calib_t = (val_x, val_t) if len(val_x) else (train_x, train_t)
    text = task_text_embeddings(checkpoint.prompt_embeddings, calib_t)
    scores = predict(model, calib_x, text, device=device, prepared=True).score
    head = fit_scope(model, config.model, train_x, train_t, len(tasks), copy_inputs=copies, device=device)
    calibration = calibrate(model, config.model, head, tasks.ids, calib_x, calib_t, scores, train_inputs=train_x,
                            train_task_indices=train_t, source=VALIDATION_SOURCE if len(val_x) else TRAINING_SOURCE,
                            device=device)
    save_checkpoint(run_dir, model=model.cpu(), config=config, tasks=tasks,
                    prompt_embeddings=checkpoint.prompt_embeddings, thresholds=checkpoint.thresholds,
                    info=checkpoint.info, scope=head.cpu(), calibration=calibration)
    return calibration
