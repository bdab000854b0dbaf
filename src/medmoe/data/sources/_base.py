"""What every dataset layout shares: the :class:`Source` interface, image listing, layout errors."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medmoe.data.manifest import Sample
from medmoe.data.splits import ContentHashes, joint_groups, seeded_pick, seeded_rng
from medmoe.errors import DatasetError
from medmoe.io.discovery import broken_link_reason, walk_files
from medmoe.io.formats import image_suffix


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix), sorted (:func:`medmoe.io.discovery.walk_files`: hidden
    files skipped, folder links followed once). Anything else (``SOURCE.md``, ``PROVENANCE.csv`` …) is
    ignored; a broken symbolic link, or a folder that cannot be listed, is skipped with a warning naming it.
    """
    walk = walk_files(folder, recursive=recursive)
    for note in walk.notes:
        warnings.warn(note, stacklevel=2)
    images = []
    for path in walk.files:
        if not image_suffix(path.name):
            continue
        reason = broken_link_reason(path)
        if reason is None:
            images.append(path)
        else:
            warnings.warn(f"skipped '{path}': {reason}", stacklevel=2)
    return images


def find_dir(root: Path, candidates: Sequence[str], containing: Sequence[str] = ()) -> Path | None:
    """The first ``root/<candidate>`` that is a folder holding every one of ``containing``."""
    for candidate in candidates:
        folder = root / candidate
        if folder.is_dir() and all((folder / c).exists() for c in containing):
            return folder
    return None


def relative(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, with ``/`` separators (the form manifests store)."""
    return path.relative_to(root).as_posix()


def report_problems(meta: dict[str, str], key: str, names: Sequence[str]) -> None:
    """Record a count and the list of names in manifest metadata (``key``, ``key_names``)."""
    meta[key] = str(len(names))
    if names:
        meta[f"{key}_names"] = ", ".join(names)


@dataclass
class Layout:
    """What a source reads from its folder, before the validation carve and duplicate flags.

    Attributes:
        samples: rows in ``train`` (normals) and ``test``; a source may also give ``val`` rows.
        meta: provenance and problems found (``unresolved``, ``ignored`` …).
    """

    samples: list[Sample]
    meta: dict[str, str] = field(default_factory=dict)


class Source(ABC):
    """One dataset layout: reads a folder in that layout into manifest rows.

    Class attributes:
        name: the layout's name on the command line (``busi``).
        task: the task id it serves, or ``None`` when the caller must give one (``folder``).
        description: one line for ``medmoe data sources``.
        expected: what the root must hold, for error messages.
        origin: where the data come from, for error messages.
        terms: the data's licence or terms of use as far as they are known (model cards quote it).
        user_supplied_images: the images are not redistributable and often absent (RSNA, LAG).
    """

    name: ClassVar[str]
    task: ClassVar[str | None]
    description: ClassVar[str]
    expected: ClassVar[str]
    origin: ClassVar[str]
    terms: ClassVar[str] = "not recorded"
    user_supplied_images: ClassVar[bool] = False

    @abstractmethod
    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        """Read the folder ``root`` (absolute) into rows for ``task``.

        Args:
            root: the dataset root; manifest paths are relative to it.
            task: the task id of every row.
            seed: seed of any seeded split the layout needs (paper splits ignore it).
            hashes: shared file-hash cache (seeded splits keep identical files together).

        Raises:
            DatasetError: the folder is not in this layout.
        """

    def has_images(self, root: Path) -> bool:
        """Whether the images are present under ``root`` (cheap; for sources whose images users supply)."""
        return True

    def group_key(self, sample: Sample) -> str:
        """Samples with the same key stay on one side of the validation carve (a patient id)."""
        return sample.path

    def layout_error(self, root: Path, problem: str) -> DatasetError:
        """The one error for a folder that is not in this layout."""
        return DatasetError(
            f"{self.name}: {problem} — expected {self.expected} under '{root}'; {self.origin}"
        )


def split_normals(root: Path, normals: Sequence[Sample], n_train: int, seed: int, hashes: ContentHashes,
                  groups: Iterable[str] | None = None) -> list[Sample]:
    """Move a seeded ``n_train`` of the given (test) normals to ``train``.

    Identical files, and items sharing a key in ``groups`` (a patient id), stay together.

    Args:
        root: the dataset root the sample paths are relative to.
        normals: ``test`` rows with label 0, in a fixed (sorted) order.
        n_train: how many go to ``train``.
        seed: the split seed.
        hashes: the shared file-hash cache.
        groups: one key per normal, or ``None``.

    Returns:
        the same rows, ``n_train`` of them now in ``train``.
    """
    digests = [hashes(root / s.path) for s in normals]
    keys = joint_groups(digests, list(groups) if groups is not None else [s.path for s in normals])
    task = normals[0].task if normals else ""
    picked = seeded_pick(keys, n_train, seeded_rng(seed, "train", task))
    return [s.with_split("train") if p else s for s, p in zip(normals, picked, strict=False)]
