"""Public dataset layouts → manifests with the paper's splits, a validation carve and data-quality flags.

Each module reads one layout (the folder as its public download unpacks) into manifest rows:

- ``headct`` → ``head_ct``: seeded, 90 of 100 normals train;
- ``busi`` → ``breast_us``: seeded, 99 of 133 normals train;
- ``brain_tumor`` → ``brain_mri``: the paper split (``splits/data.json``);
- ``chest_xray`` → ``chest_xray``: the dataset's own train/test (Kermany, substitute for RSNA);
- ``rsna`` → ``chest_xray``: the paper split;
- ``eye_diseases`` → ``fundus``: seeded, 700 of 1,074 normals train, by patient (substitute for LAG);
- ``lag`` → ``fundus``: the paper split;
- ``folder`` → the ``--task`` given: the user's own ``train/``, ``val/``, ``test/`` folders.

:func:`prepare_source` then carves a seeded 10 % of each task's training normals as ``val`` (whole
groups: a patient's images, and byte-identical files, stay together) and flags duplicates, leakage
and label conflicts from file-byte hashes (:mod:`medmoe.data.splits`). Problems are recorded in the
manifest's metadata, never hidden: ``unresolved`` (+ ``unresolved_names``) for split or label entries
without a file, ``ignored`` for folders not used, and source-specific counts.

``mask`` column values (see :mod:`medmoe.data.manifest`): one path, several paths joined by ``|``
(BUSI's one-file-per-lesion masks, to be ORed), or ``box:x,y,w,h;…`` (RSNA boxes, to be rasterised).
Mask files are never written; the data root is only read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medmoe.data.manifest import Manifest
from medmoe.data.sources._base import Source
from medmoe.data.sources.brain_tumor import BrainTumor
from medmoe.data.sources.busi import Busi
from medmoe.data.sources.chest_xray import ChestXray
from medmoe.data.sources.eye_diseases import EyeDiseases
from medmoe.data.sources.folder import Folder
from medmoe.data.sources.headct import HeadCT
from medmoe.data.sources.lag import Lag
from medmoe.data.sources.rsna import Rsna
from medmoe.data.splits import (
    VAL_FRACTION,
    ContentHashes,
    carve_validation,
    check_split_args,
    flag_duplicates,
    joint_groups,
    sort_samples,
)
from medmoe.errors import ConfigError, DatasetError
from medmoe.tasks import check_task_id

__all__ = ["SOURCES", "TASK_SOURCES", "Source", "get_source", "prepare_all", "prepare_source"]

_log = logging.getLogger(__name__)

SOURCES: dict[str, Source] = {
    s.name: s for s in (HeadCT(), Busi(), BrainTumor(), ChestXray(), Rsna(), EyeDiseases(), Lag(), Folder())
}
"""Every layout by name (the ``SOURCE`` argument of ``medmoe prepare``)."""

TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "chest_xray": ("rsna", "chest_xray"),
    "brain_mri": ("brain_tumor",),
    "fundus": ("lag", "eye_diseases"),
    "breast_us": ("busi",),
    "head_ct": ("headct",),
}
"""Task id → the sources that can serve it under a data root, paper dataset first, then substitute.
Under a data root each source lives in the folder of its own name (``DATA/busi/``)."""


def get_source(name: str) -> Source:
    """The layout called ``name``."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DatasetError(f"unknown dataset layout {name!r}; known: {', '.join(SOURCES)}") from None


def prepare_source(name: str, root: str | Path, seed: int = 0, val_fraction: float = VAL_FRACTION, *,
                   task: str | None = None) -> Manifest:
    """Read a dataset folder into a manifest: split, validation carve, duplicate flags.

    Deterministic for a seed; the seeded splits change with it, the paper splits never do.

    Args:
        name: the layout (a key of :data:`SOURCES`).
        root: the dataset folder; manifest paths are relative to it.
        seed: seed of the seeded splits and of the validation carve (non-negative).
        val_fraction: share of each task's training normals moved to ``val``, in ``[0, 1)``.
        task: task id of the rows; required for ``folder``, defaults to the layout's own task.

    Raises:
        DatasetError: the folder is missing or not in the layout (one message saying what is expected).
        ConfigError: a bad seed, fraction or task id.
    """
    source = get_source(name)
    task = task or source.task
    if task is None:
        raise ConfigError(f"layout '{name}' serves no fixed task; give one with --task (e.g. --task knee_mri)")
    check_task_id(task)
    check_split_args(seed, val_fraction)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise source.layout_error(root, "the folder does not exist")
    hashes = ContentHashes()
    layout = source.read(root, task=task, seed=seed, hashes=hashes)
    manifest = Manifest(root=root, samples=sort_samples(layout.samples))
    groups = joint_groups([source.group_key(s) for s in manifest.samples], hashes.of_samples(manifest))
    manifest = carve_validation(manifest, val_fraction, seed, groups)
    manifest = flag_duplicates(manifest, hashes)
    manifest.samples = sort_samples(manifest.samples)
    manifest.meta = {"source": name, "task": task, "seed": str(seed), "val_fraction": f"{val_fraction:g}",
                     **layout.meta}
    return manifest


def prepare_all(data_root: str | Path, seed: int = 0, val_fraction: float = VAL_FRACTION, *,
                prefer_paper: bool = True) -> dict[str, Manifest]:
    """Prepare every standard dataset folder found under a data root, one manifest per task.

    The folders are named after their sources (``headct/``, ``busi/``, ``brain_tumor/``,
    ``chest_xray/``, ``eye_diseases/``, ``rsna/``, ``lag/``). ``rsna/`` and ``lag/`` count only if their
    images are present. When two sources serve one task (:data:`TASK_SOURCES`), the paper dataset
    is used if present, else the substitute; ``prefer_paper=False`` reverses that.

    Args:
        data_root: the folder holding the dataset folders.
        seed: see :func:`prepare_source`.
        val_fraction: see :func:`prepare_source`.
        prefer_paper: prefer RSNA over Kermany and LAG over Eye Diseases.

    Returns:
        task id → its manifest, for the tasks found.

    Raises:
        DatasetError: the data root is missing or holds no standard folder; a standard folder is
            present but not in its layout.
    """
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir():
        raise DatasetError(f"data root '{data_root}' does not exist")
    manifests: dict[str, Manifest] = {}
    for task, names in TASK_SOURCES.items():
        for name in names if prefer_paper else names[::-1]:
            folder, source = data_root / name, SOURCES[name]
            if not folder.is_dir():
                continue
            if source.user_supplied_images and not source.has_images(folder):
                _log.info("skipping %s: no images (expected %s)", folder, source.expected)
                continue
            manifests[task] = prepare_source(name, folder, seed, val_fraction)
            break
    if not manifests:
        raise DatasetError(
            f"data root '{data_root}' holds none of the dataset folders "
            f"{', '.join(n for names in TASK_SOURCES.values() for n in names)} (with images)"
        )
    return manifests
