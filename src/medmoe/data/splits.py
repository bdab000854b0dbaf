"""Seeded splits, the validation carve, content hashing and duplicate/leakage/label-conflict flags.

Everything random here is deterministic for a seed: items are taken in the order the caller gives
(sources sort by path), and every random choice draws from its own stream,
``numpy.random.default_rng([seed, crc32(purpose)...])``, so adding one choice never shifts another.

Splits keep *groups* together: items sharing a group key (a patient id, or the same file bytes) all
land on the same side, so a split never creates train/test leakage of its own. Use
:func:`joint_groups` to combine several keyings (patient id *and* content hash).

Data-quality flags (see :data:`medmoe.data.manifest.KNOWN_FLAGS`) come from the sha256 of each
file's bytes (files are never decoded), compared within one task:

- ``dup_of_train``: a ``test`` row whose bytes occur in ``train`` or ``val``, or a ``val`` row whose
  bytes occur in ``train``;
- ``duplicate``: every copy after the first of the same bytes within one split (manifest order);
- ``label_conflict``: every row of a group of identical bytes that carries more than one
  ``(label, subclass)`` (BUSI's ``benign (433)`` = ``malignant (145)``).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from medmoe.data.manifest import Manifest, Sample
from medmoe.errors import ConfigError, DatasetError

VAL_FRACTION = 0.1
"""The default share of each task's training normals carved out as validation (one home for it)."""

_CHUNK = 1 << 20
# a row of the key split that has the same bytes as a row of one of these splits is ``dup_of_train``
_COPIED_FROM: dict[str, set[str]] = {"train": set(), "val": {"train"}, "test": {"train", "val"}}


class ContentHashes:
    """sha256 of file bytes, computed once per path and remembered.

    One instance is shared by every step of a ``prepare`` run, so each file is read once.
    """

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def __call__(self, path: str | Path) -> str:
        """Hex sha256 of the bytes of ``path``."""
        path = Path(path)
        if path not in self._cache:
            digest = hashlib.sha256()
            try:
                with path.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(_CHUNK), b""):
                        digest.update(chunk)
            except OSError as exc:
                raise DatasetError(f"cannot read '{path}' to hash it: {exc.strerror or exc}") from exc
            self._cache[path] = digest.hexdigest()
        return self._cache[path]

    def of_samples(self, manifest: Manifest) -> list[str]:
        """Hashes of the image of every sample of ``manifest``, in sample order."""
        return [self(manifest.resolve(s.path)) for s in manifest.samples]


def check_split_args(seed: int, val_fraction: float = 0.0) -> None:
    """Raise :class:`ConfigError` unless ``seed`` ≥ 0 and ``val_fraction`` is in ``[0, 1)``."""
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1), not {val_fraction}")


def seeded_rng(seed: int, *purpose: str) -> np.random.Generator:
    """A generator for one purpose (e.g. ``"val"``, ``"brain_mri"``), independent of the others."""
    check_split_args(seed)
    return np.random.default_rng([seed, *(zlib.crc32(p.encode("utf-8")) for p in purpose)])


def share(n: int, numerator: int, denominator: int) -> int:
    """``n * numerator / denominator`` rounded half up, in integer arithmetic.

    Sources state their paper counts as a share of the full dataset (BUSI: 99 of 133 normals), so a
    complete download gets the paper's count exactly and a partial one a proportional count.
    """
    return (2 * n * numerator + denominator) // (2 * denominator)


def joint_groups(*keyings: Sequence[Hashable]) -> list[int]:
    """Merge several keyings of the same items into one group id per item.

    Two items share a group if they share a key under any keying, directly or through a chain of
    other items (union-find). Group ids are numbered in order of first appearance.

    Args:
        keyings: each a sequence of one key per item, all of the same length.
    """
    sizes = {len(k) for k in keyings}
    if len(sizes) > 1:
        raise ValueError(f"keyings have different lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in keyings:
        first: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    numbering: dict[int, int] = {}
    return [numbering.setdefault(find(i), len(numbering)) for i in range(n)]


def seeded_pick(groups: Sequence[Hashable], n_pick: int, rng: np.random.Generator) -> list[bool]:
    """Choose ``n_pick`` items at random, whole groups at a time.

    The groups are shuffled and walked in that order; a group is taken if it still fits. This takes
    exactly ``n_pick`` items whenever the walk can fill it (always when enough groups are single
    items), otherwise the largest total below it that the walk reaches.

    Args:
        groups: one group key per item.
        n_pick: how many items to choose (0 ≤ n_pick ≤ len(groups)).
        rng: the random stream (see :func:`seeded_rng`).

    Returns:
        one bool per item: chosen or not.
    """
    if not 0 <= n_pick <= len(groups):
        raise ValueError(f"cannot pick {n_pick} of {len(groups)} items")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    order = list(members.values())
    chosen = [False] * len(groups)
    remaining = n_pick
    for k in rng.permutation(len(order)):
        if remaining == 0:
            break
        group = order[int(k)]
        if len(group) <= remaining:
            for i in group:
                chosen[i] = True
            remaining -= len(group)
    return chosen


def carve_validation(manifest: Manifest, fraction: float, seed: int,
                     groups: Sequence[Hashable] | None = None) -> Manifest:
    """Move a seeded ``fraction`` of each task's training normals to ``val``.

    ``round(fraction × n_train)`` images move (half up), at most ``n_train - 1`` so that training
    keeps an image. Tasks that already have ``val`` samples (a user's own ``val/`` folder) are left
    as they are.

    Args:
        manifest: the manifest; not modified.
        fraction: share of training normals to move, in ``[0, 1)``.
        seed: the split seed; each task draws from its own stream.
        groups: one key per sample; samples sharing a key move together (patient id, content
            hash — see :func:`joint_groups`). ``None``: every sample on its own.

    Returns:
        a new manifest with the same rows, some moved from ``train`` to ``val``.
    """
    check_split_args(seed, fraction)
    keys: Sequence[Hashable] = groups if groups is not None else range(len(manifest.samples))
    if len(keys) != len(manifest.samples):
        raise ValueError(f"{len(keys)} group keys for {len(manifest.samples)} samples")
    samples = list(manifest.samples)
    for task in manifest.tasks:
        if manifest.select(split="val", task=task):
            continue
        train = [i for i, s in enumerate(samples) if s.task == task and s.split == "train"]
        n_val = min(math.floor(fraction * len(train) + 0.5), max(len(train) - 1, 0))
        picked = seeded_pick([keys[i] for i in train], n_val, seeded_rng(seed, "val", task))
        for i, moved in zip(train, picked, strict=False):
            if moved:
                samples[i] = samples[i].with_split("val")
    return Manifest(root=manifest.root, samples=samples, meta=dict(manifest.meta))


def flag_duplicates(manifest: Manifest, hashes: ContentHashes | None = None) -> Manifest:
    """Add ``dup_of_train``, ``duplicate`` and ``label_conflict`` flags from file-byte hashes.

    See the module docstring for the rules. Comparisons stay within one task.

    Args:
        manifest: the manifest; not modified.
        hashes: a shared hash cache (one is made if ``None``).

    Returns:
        a new manifest with the same rows in the same order, flags added.
    """
    digests = (hashes or ContentHashes()).of_samples(manifest)
    by_content: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (s, d) in enumerate(zip(manifest.samples, digests, strict=False)):
        by_content[(s.task, d)].append(i)
    samples = list(manifest.samples)
    for rows in by_content.values():
        if len(rows) < 2:
            continue
        if len({(samples[i].label, samples[i].subclass) for i in rows}) > 1:
            for i in rows:
                samples[i] = samples[i].with_flag("label_conflict")
        splits = {samples[i].split for i in rows}
        seen: set[str] = set()
        for i in rows:
            s = samples[i]
            if splits & _COPIED_FROM[s.split]:
                s = s.with_flag("dup_of_train")
            if s.split in seen:
                s = s.with_flag("duplicate")
            seen.add(s.split)
            samples[i] = s
    return Manifest(root=manifest.root, samples=samples, meta=dict(manifest.meta))


def sort_samples(samples: Sequence[Sample]) -> list[Sample]:
    """Samples in manifest order: by split (train, val, test), then label, then path."""
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(samples, key=lambda s: (s.task, order[s.split], s.label, s.path))
