"""The torch Dataset over manifests, with an on-disk cache of preprocessed images.

Each row of one or more manifests becomes an :class:`Item`: the image as the model sees it
(``(C, R, R)`` in ``[0, 1]``, see :mod:`medmoe.data.transforms` for channels, squash-resize and
range), its lesion mask (``(1, R, R)``, any-pixel rule; boxes and several mask files handled), its
label and its task index. :func:`collate` stacks items into a :class:`Batch` (a ``DataLoader``
``collate_fn``); :meth:`ImageDataset.materialize` loads a whole dataset into one in-memory
:class:`Batch`, which is what training iterates over: 32 KB per image at 64 × 64 (image and mask,
``float32``), about 110 MB for the ~3,300 training normals of the five tasks.

Precision: pixels are stored as ``float16`` (absolute error at most 2.4e-4 on ``[0, 1]``, eight
times finer than 8-bit quantisation, which would also lose the depth of 12–16-bit DICOM), whether
or not a cache is used, so a cached and an uncached pass give identical tensors. Masks are exact.

The cache (``cache_dir``) is content-addressed: the key is the SHA-256 of the image file's bytes,
the mask files' bytes (or the box specification), and every preprocessing setting (resolution,
channels, intensity window, :data:`CACHE_VERSION`). Editing a file or changing a setting therefore
misses the cache; identical files share one entry; paths do not matter. An entry is one ``.npy``
array ``(C + 1, R, R)`` ``float16`` (image channels, then the mask), written atomically; an entry
that cannot be read or has the wrong shape is recomputed and rewritten. The cache is safe to delete.

An image that cannot be read raises :class:`~medmoe.errors.ImageReadError` naming the file: rows
are never dropped silently. :meth:`ImageDataset.check` tries every row and lists the failures.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medmoe.atomic import atomic_write_bytes
from medmoe.data.manifest import Manifest, Sample
from medmoe.data.transforms import is_box_spec, preprocess_image, rasterize_boxes, resize_mask, widen_channels
from medmoe.errors import ConfigError, DatasetError, ImageReadError
from medmoe.io import read_image
from medmoe.io.policy import check_scorable
from medmoe.io.reader import window_for
from medmoe.tasks import TaskRegistry

CACHE_VERSION = 2
"""Bump when preprocessing changes in a way the cache key does not capture."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One preprocessed image.

    Attributes:
        image: ``(C, R, R)`` ``float32`` in ``[0, 1]``.
        mask: ``(1, R, R)`` ``float32`` in ``{0, 1}``; all zeros when the image has no mask.
        has_mask: whether the manifest gives a mask for this image (it may be known-empty).
        label: 0 normal, 1 abnormal.
        task_index: index of the image's task in the dataset's :class:`~medmoe.tasks.TaskRegistry`.
        index: row of the image in the dataset.
    """

    image: torch.Tensor
    mask: torch.Tensor
    has_mask: bool
    label: int
    task_index: int
    index: int


@dataclass(frozen=True)
class Batch:
    """Stacked items; every field has the batch size ``B`` as its first dimension.

    Attributes:
        images: ``(B, C, R, R)`` ``float32`` in ``[0, 1]``.
        masks: ``(B, 1, R, R)`` ``float32`` in ``{0, 1}``.
        has_mask: ``(B,)`` ``bool``.
        labels: ``(B,)`` ``int64``.
        task_indices: ``(B,)`` ``int64``.
        indices: ``(B,)`` ``int64``, rows in the dataset.
    """

    images: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    labels: torch.Tensor
    task_indices: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, rows: slice | torch.Tensor) -> Batch:
        """The rows selected by a slice, an index tensor or a boolean tensor (for minibatches of a
        materialised dataset)."""
        return Batch(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})


def collate(items: Sequence[Item]) -> Batch:
    """Stack items into a :class:`Batch` (use as a ``DataLoader`` ``collate_fn``)."""
    return Batch(
        images=torch.stack([it.image for it in items]),
        masks=torch.stack([it.mask for it in items]),
        has_mask=torch.tensor([it.has_mask for it in items], dtype=torch.bool),
        labels=torch.tensor([it.label for it in items], dtype=torch.int64),
        task_indices=torch.tensor([it.task_index for it in items], dtype=torch.int64),
        indices=torch.tensor([it.index for it in items], dtype=torch.int64),
    )


def _file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes; an unreadable file is an :class:`ImageReadError`."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ImageReadError(path, f"{exc.strerror or exc}; check the file and the manifest's root folder") from None
    return digest.hexdigest()


class ImageDataset(Dataset[Item]):
    """Images of one or more manifests, preprocessed for the model.

    Args:
        entries: ``(manifest, sample)`` pairs; each sample's paths resolve against its manifest's root.
        tasks: the task registry; gives each image its task index and channels.
        channels: the model's input channels ``C``, every image's: a colour task's images are read in colour for
            a colour model (3) and gray for a gray one (1); a gray task's are read gray and replicated
            (:meth:`~medmoe.tasks.Task.channels_for`).
        resolution: output side ``R`` (images are squashed to ``R × R``).
        cache_dir: folder of the preprocessed cache (created as needed); ``None`` disables it.
        with_masks: load masks; if false every mask is zeros and ``has_mask`` is false.

    DICOM and NIfTI files are read with their task's :attr:`~medmoe.tasks.Task.window` (other formats
    hold display values and ignore it); without one, the file's own window (DICOM VOI) or min–max.

    Raises:
        DatasetError: no entries, or a task missing from ``tasks``.
        ConfigError: a bad resolution.
    """

    def __init__(self, entries: Sequence[tuple[Manifest, Sample]], tasks: TaskRegistry, resolution: int = 64,
                 cache_dir: Path | None = None, with_masks: bool = True, channels: int = 1) -> None:
        self.entries: list[tuple[Manifest, Sample]] = list(entries)
        self.tasks = tasks
        self.resolution = int(resolution)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.with_masks = with_masks
        if not self.entries:
            raise DatasetError("the dataset has no images; check the manifest and the split/flag filters")
        if self.resolution < 1:
            raise ConfigError(f"resolution must be a positive number of pixels, not {resolution}")
        for manifest, sample in self.entries:
            if sample.task not in tasks:
                raise DatasetError(
                    f"image '{manifest.resolve(sample.path)}' has task {sample.task!r}, which is not in the task "
                    f"registry ({', '.join(tasks.ids)}); add it with a task file or leave those rows out"
                )
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (gray) or 3 (colour), not {channels}")
        self.channels = channels
        self._task_indices = [tasks.index(s.task) for _, s in self.entries]

    @classmethod
    def from_manifests(cls, manifests: Iterable[Manifest], tasks: TaskRegistry, *, split: str | None = None,
                       exclude_flags: Sequence[str] = (), **kwargs: Any) -> ImageDataset:
        """A dataset of the rows of several manifests, filtered by split and flags.

        Args:
            manifests: the manifests.
            tasks: the task registry.
            split: keep only this split (``train``, ``val``, ``test``); all if ``None``.
            exclude_flags: drop rows carrying any of these flags (e.g. ``("dup_of_train",)``).
            **kwargs: the other arguments of :class:`ImageDataset`.
        """
        manifests = list(manifests)
        entries = [(m, s) for m in manifests for s in m.select(split=split, exclude_flags=exclude_flags)]
        if not entries:
            roots = ", ".join(f"'{m.root}'" for m in manifests) or "(none given)"
            raise DatasetError(
                f"no images with split={split!r} (excluding flags {list(exclude_flags)}) in the manifest(s) of {roots}"
            )
        return cls(entries, tasks, **kwargs)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Item:
        index = range(len(self))[index]  # negative indices; IndexError when out of range
        image, mask = self._load(index)
        sample = self.entries[index][1]
        return Item(image=image, mask=mask, has_mask=self._has_mask(sample), label=sample.label,
                    task_index=self._task_indices[index], index=index)

    def materialize(self, progress: bool = True, workers: int = 0) -> Batch:
        """The whole dataset as one in-memory :class:`Batch` (row ``i`` is item ``i``).

        Args:
            progress: show a tqdm progress bar.
            workers: ``DataLoader`` worker processes decoding in parallel (0: this process).
        """
        n, size = len(self), self.resolution
        images = torch.empty((n, self.channels, size, size), dtype=torch.float32)
        masks = torch.empty((n, 1, size, size), dtype=torch.float32)
        loader = DataLoader(self, batch_size=64, shuffle=False, num_workers=workers, collate_fn=collate)
        with tqdm(total=n, desc="loading images", unit="img", disable=not progress) as bar:
            for batch in loader:
                images[batch.indices] = batch.images
                masks[batch.indices] = batch.masks
                bar.update(len(batch))
        samples = [s for _, s in self.entries]
        return Batch(
            images=images,
            masks=masks,
            has_mask=torch.tensor([self._has_mask(s) for s in samples], dtype=torch.bool),
            labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
            task_indices=torch.tensor(self._task_indices, dtype=torch.int64),
            indices=torch.arange(n, dtype=torch.int64),
        )

    def check(self, progress: bool = True) -> list[tuple[Path, str]]:
        """Try to load every row; return ``(file, reason)`` for each that fails (empty: all good).

        Cached rows whose files are unchanged count as readable without decoding them again.
        """
        failures: list[tuple[Path, str]] = []
        for index in tqdm(range(len(self)), desc="checking images", unit="img", disable=not progress):
            try:
                self._load(index)
            except ImageReadError as exc:
                failures.append((Path(exc.path), exc.reason))
            except DatasetError as exc:
                manifest, sample = self.entries[index]
                failures.append((manifest.resolve(sample.path), str(exc)))
        return failures

    # ---------------------------------------------------------------------------------------------

    def _has_mask(self, sample: Sample) -> bool:
        return self.with_masks and bool(sample.mask)

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``(C, R, R)`` and mask ``(1, R, R)`` of a row, from the cache when possible."""
        manifest, sample = self.entries[index]
        image_path = manifest.resolve(sample.path)
        mask_spec = sample.mask if self.with_masks else ""
        mask_files = [] if is_box_spec(mask_spec) else [manifest.resolve(p) for p in mask_spec.split("|") if p]
        window = window_for(image_path, self.tasks[sample.task].window)
        channels = self.tasks[sample.task].channels_for(self.channels)
        if self.cache_dir is None:
            array = self._preprocess(image_path, mask_spec, mask_files, window, channels)
        else:
            key = self._cache_key(image_path, mask_spec, mask_files, window, channels)
            entry = self.cache_dir / key[:2] / f"{key}.npy"
            cached = self._read_cache(entry, channels)
            if cached is None:
                array = self._preprocess(image_path, mask_spec, mask_files, window, channels)
                buffer = io.BytesIO()
                np.save(buffer, array)
                atomic_write_bytes(entry, buffer.getvalue())
            else:
                array = cached
        array = array.astype(np.float32)
        return torch.from_numpy(widen_channels(array[:channels], self.channels)), torch.from_numpy(array[channels:])

    def _preprocess(self, image_path: Path, mask_spec: str, mask_files: list[Path],
                    window: tuple[float, float] | None, channels: int) -> np.ndarray:
        """Decode and preprocess one row read with ``channels`` ``c``: ``(c + 1, R, R)`` ``float16``, the mask last."""
        decoded = read_image(image_path, window=window)
        check_scorable(image_path, decoded)
        image = preprocess_image(decoded, channels, self.resolution)
        shape = decoded.shape[:2]
        if is_box_spec(mask_spec):
            try:
                raw = rasterize_boxes(mask_spec, shape)
            except DatasetError as exc:
                raise DatasetError(f"image '{image_path}': {exc}") from None
        else:
            raw = np.zeros(shape, dtype=bool)
            for mask_file in mask_files:
                lesion = read_image(mask_file) > 0
                lesion = lesion.any(axis=-1) if lesion.ndim == 3 else lesion
                if lesion.shape != shape:
                    raise DatasetError(
                        f"mask '{mask_file}' is {lesion.shape[1]}x{lesion.shape[0]} pixels but its image "
                        f"'{image_path}' is {shape[1]}x{shape[0]}; a mask must match its image"
                    )
                raw |= lesion
        mask = resize_mask(raw, self.resolution)
        return np.concatenate([image, mask]).astype(np.float16)

    def _cache_key(self, image_path: Path, mask_spec: str, mask_files: list[Path],
                   window: tuple[float, float] | None, channels: int) -> str:
        """SHA-256 over the file contents and every setting that changes the preprocessed array."""
        key = {
            "version": CACHE_VERSION,
            "resolution": self.resolution,
            "channels": channels,
            "window": window,
            "image": _file_sha256(image_path),
            "mask_boxes": mask_spec if is_box_spec(mask_spec) else None,
            "mask_files": [_file_sha256(p) for p in mask_files],
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()

    def _read_cache(self, entry: Path, channels: int) -> np.ndarray | None:
        """A cached array, or ``None`` if absent or unusable (then it is recomputed and rewritten)."""
        try:
            array = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            _log.warning("recomputing corrupt cache entry '%s' (%s)", entry, exc)
            return None
        expected = (channels + 1, self.resolution, self.resolution)
        if array.dtype != np.float16 or array.shape != expected:
            _log.warning("recomputing cache entry '%s' of shape %s, expected %s", entry, array.shape, expected)
            return None
        return array
