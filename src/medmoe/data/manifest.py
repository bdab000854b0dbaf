"""Manifests: one CSV row per image, saying which task, label, split and mask it has.

A manifest is a CSV with the columns :data:`COLUMNS`. ``path`` and ``mask`` are relative to the
data root, which the file records in a leading comment line (``# root: /data/busi``) together with
other provenance (source layout, seed, unresolved entries). Readers that ignore ``#`` lines
(``pandas.read_csv(comment="#")``) see a plain table.

- ``label``: 0 normal, 1 abnormal.
- ``split``: ``train``, ``val`` or ``test`` (train and val hold normal images only).
- ``subclass``: the dataset's own class (``glioma``, ``benign`` …).
- ``mask``: where the abnormality is, or empty. One of: a mask image path; several mask image paths
  joined by ``|`` (one lesion per file, as BUSI ships them; the dataset layer ORs them); or bounding
  boxes ``box:x,y,w,h;x,y,w,h`` in the image's own pixel coordinates (RSNA), rasterised by the dataset
  layer. Non-zero mask pixels are abnormal.
- ``flags``: ``;``-separated data-quality flags (see :data:`KNOWN_FLAGS`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from medmoe.atomic import atomic_write_text
from medmoe.errors import DatasetError

COLUMNS: tuple[str, ...] = ("path", "task", "label", "split", "subclass", "mask", "flags")
SPLITS: tuple[str, ...] = ("train", "val", "test")
KNOWN_FLAGS: dict[str, str] = {
    "dup_of_train": "byte-identical to an image in train/val; excluded from the 'dedup' metrics",
    "label_conflict": "the same bytes occur with a different label",
    "other_source": "comes from a different source than the task's normals (source confound)",
    "duplicate": "byte-identical to another image of the same split",
}


@dataclass(frozen=True)
class Sample:
    """One image of a manifest.

    Attributes:
        path: image path relative to the manifest root (or absolute).
        task: task id (see :mod:`medmoe.tasks`).
        label: 0 normal, 1 abnormal.
        split: ``train``, ``val`` or ``test``.
        subclass: the dataset's own class name.
        mask: mask path relative to the root, or ``""``.
        flags: data-quality flags.
    """

    path: str
    task: str
    label: int
    split: str
    subclass: str = ""
    mask: str = ""
    flags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise DatasetError(f"sample '{self.path}': label must be 0 or 1, not {self.label!r}")
        if self.split not in SPLITS:
            raise DatasetError(f"sample '{self.path}': split must be one of {SPLITS}, not {self.split!r}")
        if self.split in ("train", "val") and self.label != 0:
            raise DatasetError(f"sample '{self.path}': {self.split} images must be normal (label 0)")

    def with_flag(self, flag: str) -> Sample:
        """A copy with ``flag`` added (no-op if present)."""
        return self if flag in self.flags else replace(self, flags=(*self.flags, flag))

    def with_split(self, split: str) -> Sample:
        """A copy moved to another split."""
        return replace(self, split=split)


@dataclass
class Manifest:
    """Samples plus the root their paths are relative to, and provenance metadata.

    Attributes:
        root: the data root (absolute).
        samples: the rows.
        meta: provenance written as ``# key: value`` lines (source, seed, unresolved …).
    """

    root: Path
    samples: list[Sample]
    meta: dict[str, str] = field(default_factory=dict)

    def resolve(self, relative: str) -> Path:
        """Absolute path of a manifest path (``path`` or ``mask``)."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def select(self, *, split: str | None = None, task: str | None = None,
               exclude_flags: Sequence[str] = ()) -> list[Sample]:
        """Samples of one split and/or task, without those carrying any of ``exclude_flags``."""
        return [
            s for s in self.samples
            if (split is None or s.split == split)
            and (task is None or s.task == task)
            and not set(s.flags) & set(exclude_flags)
        ]

    @property
    def tasks(self) -> list[str]:
        """Task ids present, in order of first appearance."""
        return list(dict.fromkeys(s.task for s in self.samples))


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write a manifest CSV atomically (a temporary file renamed into place)."""
    path = Path(path)
    buffer = io.StringIO()
    buffer.write(f"# root: {manifest.root.resolve()}\n")
    for key, value in manifest.meta.items():
        buffer.write(f"# {key}: {str(value).replace(chr(10), ' ')}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for s in manifest.samples:
        writer.writerow([s.path, s.task, s.label, s.split, s.subclass, s.mask, ";".join(s.flags)])
    atomic_write_text(path, buffer.getvalue())


def read_manifest(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Read a manifest CSV.

    Args:
        path: the CSV file.
        root: overrides the root recorded in the file (for data that moved).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest '{path}' does not exist; create one with 'medmoe prepare'")
    meta: dict[str, str] = {}
    rows: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            rows.append(line)
    reader = csv.DictReader(rows)
    missing = set(COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise DatasetError(f"manifest '{path}' lacks column(s) {sorted(missing)}; expected {list(COLUMNS)}")
    samples = []
    for lineno, row in enumerate(reader, start=2):
        try:
            samples.append(Sample(
                path=row["path"], task=row["task"], label=int(row["label"]), split=row["split"],
                subclass=row["subclass"], mask=row["mask"],
                flags=tuple(f for f in row["flags"].split(";") if f),
            ))
        except (ValueError, DatasetError) as exc:
            raise DatasetError(f"manifest '{path}', data row {lineno - 1}: {exc}") from exc
    recorded_root = meta.pop("root", None)
    chosen = root if root is not None else recorded_root if recorded_root else path.parent
    return Manifest(root=Path(chosen).resolve(), samples=samples, meta=meta)
