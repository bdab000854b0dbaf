"""Head CT hemorrhage (Kaggle ``felipekitamura/head-ct-hemorrhage``) → task ``head_ct``.

Layout, as Kaggle ships it (the folder name repeats)::

    ROOT/labels.csv                 # "id, hemorrhage" (a space after the comma); 1 = hemorrhage
    ROOT/head_ct/head_ct/000.png … 199.png

A single ``head_ct/`` level is accepted too. File ``NNN.png`` has id ``int(NNN)``.

Split (seeded, no official split exists): 90 of the 100 normals train (incl. validation), the other
10 normals and all hemorrhage slices test. Byte-identical files stay on one side. Label rows
without an image, and images without a label row, are reported as ``unresolved``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medmoe.data.manifest import Sample
from medmoe.data.sources._base import Layout, Source, find_dir, list_images, relative, report_problems, split_normals
from medmoe.data.splits import ContentHashes, share

_IMAGE_DIRS = ("head_ct/head_ct", "head_ct")
_TRAIN_SHARE = (90, 100)  # 90 of the 100 normals


class HeadCT(Source):
    """Kaggle Head CT hemorrhage."""

    name = "headct"
    task = "head_ct"
    description = "Head CT hemorrhage (Kaggle), 100 normal + 100 hemorrhage; seeded 90/10 normal split"
    expected = "labels.csv and head_ct/head_ct/*.png"
    origin = "download from Kaggle 'felipekitamura/head-ct-hemorrhage'"
    terms = "not verified"

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        image_dir = find_dir(root, _IMAGE_DIRS)
        if image_dir is None:
            raise self.layout_error(root, "no head_ct/head_ct/ folder")
        labels = self._read_labels(root)
        images = {int(p.stem): p for p in list_images(image_dir) if p.stem.isdigit()}
        unresolved = [f"labels.csv:id {i}" for i in sorted(set(labels) - set(images))]
        unresolved += [relative(root, images[i]) for i in sorted(set(images) - set(labels))]
        samples = [
            Sample(path=relative(root, images[i]), task=task, label=labels[i], split="test",
                   subclass="hemorrhage" if labels[i] else "normal")
            for i in sorted(set(images) & set(labels))
        ]
        normals = [s for s in samples if s.label == 0]
        normals = split_normals(root, normals, share(len(normals), *_TRAIN_SHARE), seed, hashes)
        meta = {"split": "seeded: 90 of 100 normals train"}
        report_problems(meta, "unresolved", unresolved)
        return Layout(samples=normals + [s for s in samples if s.label == 1], meta=meta)

    def _read_labels(self, root: Path) -> dict[int, int]:
        """``labels.csv`` as id → 0/1 (column names are stripped: Kaggle's header has a space)."""
        path = root / "labels.csv"
        if not path.is_file():
            raise self.layout_error(root, "no labels.csv")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        if "id" not in header or "hemorrhage" not in header:
            raise self.layout_error(root, f"labels.csv header is {rows[0] if rows else 'empty'}, not 'id, hemorrhage'")
        col_id, col_label = header.index("id"), header.index("hemorrhage")
        labels: dict[int, int] = {}
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                ident, label = int(row[col_id]), int(row[col_label])
            except (ValueError, IndexError):
                raise self.layout_error(root, f"labels.csv line {line} is {row}, not an id and a 0/1 label") from None
            if label not in (0, 1):
                raise self.layout_error(root, f"labels.csv line {line}: hemorrhage must be 0 or 1, not {label}")
            labels[ident] = label
        return labels
