"""Turn the ``--data`` argument of train/evaluate into manifests and in-memory tensors."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from medmoe.data.dataset import Batch, ImageDataset
from medmoe.data.manifest import Manifest, read_manifest, write_manifest
from medmoe.engine.config import RunConfig
from medmoe.engine.distributed import DistInfo, barrier
from medmoe.errors import DatasetError
from medmoe.tasks import TaskRegistry

_log = logging.getLogger(__name__)

MANIFEST_DIR = "manifests"


def default_cache_dir() -> Path:
    """``$MEDMOE_CACHE`` or ``~/.cache/medmoe``: where preprocessed images are kept."""
    return Path(os.environ.get("MEDMOE_CACHE") or Path.home() / ".cache" / "medmoe")


def resolve_data(data: Sequence[str | Path], *, seed: int, val_fraction: float) -> list[Manifest]:
    """Manifests from manifest CSVs, a folder holding ``manifest.csv``, or a data root.

    A data root (a folder with the standard dataset folders, see :func:`medmoe.data.sources.prepare_all`)
    is prepared with ``seed`` and ``val_fraction``. :func:`save_manifests` stores them in a run.

    Args:
        data: paths given on the command line; empty means ``$MEDMOE_DATA``.
        seed: seed of seeded splits when preparing a data root.
        val_fraction: validation share when preparing a data root.
    """
    if not data:
        env = os.environ.get("MEDMOE_DATA")
        if not env:
            raise DatasetError("no data given: pass --data (a data root or manifest CSVs) or set MEDMOE_DATA")
        data = [env]
    manifests: list[Manifest] = []
    for item in map(Path, data):
        if item.is_file():
            manifests.append(read_manifest(item))
        elif (item / "manifest.csv").is_file():
            manifests.append(read_manifest(item / "manifest.csv"))
        elif item.is_dir():
            from medmoe.data.sources import prepare_all

            prepared = prepare_all(item, seed=seed, val_fraction=val_fraction)
            manifests.extend(prepared.values())
        else:
            raise DatasetError(f"data path '{item}' does not exist (expected a data root, a folder with "
                               "manifest.csv, or a manifest CSV)")
    return manifests


def save_manifests(manifests: Sequence[Manifest], run_dir: Path) -> None:
    """Write every manifest a run uses to ``run_dir/manifests/``, so evaluation reuses exactly its split."""
    for manifest in manifests:
        write_manifest(manifest, run_dir / MANIFEST_DIR / f"{'+'.join(manifest.tasks) or 'empty'}.csv")


def run_manifests(run_dir: Path) -> list[Manifest]:
    """The manifests a run was trained on (stored by :func:`save_manifests`)."""
    folder = run_dir / MANIFEST_DIR
    paths = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not paths:
        raise DatasetError(f"run '{run_dir}' stores no manifests in {MANIFEST_DIR}/; pass --manifest")
    return [read_manifest(p) for p in paths]


def select_tasks(registry: TaskRegistry, manifests: Sequence[Manifest],
                 wanted: Sequence[str] = ()) -> TaskRegistry:
    """The tasks to train on, in registry order: ``wanted`` if given, else those in the data."""
    present = {t for m in manifests for t in m.tasks}
    unknown = sorted(t for t in present if t not in registry)
    if unknown:
        raise DatasetError(f"the data has task(s) {unknown} unknown to the task registry; "
                           "add them with a tasks file (data.tasks_file)")
    chosen = list(wanted) if wanted else [t for t in registry.ids if t in present]
    missing = [t for t in chosen if t not in present]
    if missing:
        raise DatasetError(f"task(s) {missing} were asked for but the data has none of their images")
    if not chosen:
        raise DatasetError("the data holds no images")
    return registry.subset(chosen)


def note_gray_reading(tasks: TaskRegistry, config: RunConfig) -> None:
    """Log the colour tasks a gray model (``model.in_channels`` 1) reads gray, and how to read them in colour."""
    colour = [t.id for t in tasks if t.channels_for(config.model.in_channels) < t.channels]
    if colour:
        _log.info("%s: colour task(s) read gray by this model (model.in_channels: 1); model.in_channels: 3 reads "
                  "them in colour", ", ".join(colour))


def load_split(manifests: Sequence[Manifest], tasks: TaskRegistry, split: str, config: RunConfig,
               cache_dir: Path, progress: bool, dist: DistInfo | None = None) -> Batch:
    """All images of the tasks' rows of one split as tensors (empty if there are none); with ``dist``
    (distributed training) rank 0 fills the cache first, the others then read it."""
    dist = dist or DistInfo(rank=0, world_size=1, device=torch.device("cpu"))
    entries = [(m, s) for m in manifests for s in m.select(split=split) if s.task in tasks]
    if not entries:
        r, c = config.model.resolution, config.model.in_channels
        empty = torch.zeros(0, dtype=torch.long)
        return Batch(images=torch.zeros(0, c, r, r), masks=torch.zeros(0, 1, r, r),
                     has_mask=torch.zeros(0, dtype=torch.bool), labels=empty, task_indices=empty, indices=empty)
    dataset = ImageDataset(entries, tasks, resolution=config.model.resolution, cache_dir=cache_dir,
                           with_masks=False, channels=config.model.in_channels)
    if not dist.is_main:
        barrier(dist)
    batch = dataset.materialize(progress=progress)
    if dist.is_main:
        barrier(dist)
    return batch
