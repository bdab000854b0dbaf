"""RSNA Pneumonia Detection Challenge (Kaggle competition) with the paper split → ``chest_xray``.

Layout (competition files; the DICOM folder must be supplied by the user)::

    ROOT/stage_2_train_images/<patientId>.dcm
    ROOT/stage_2_train_labels.csv            # patientId,x,y,width,height,Target
    ROOT/splits/data.json                    # paper split (DDAD), names <patientId>.png

Split: the paper's (``train/0`` 3,851 normals, ``test/0`` 1,000, ``test/1`` 1,000 lung opacity);
``<patientId>.png`` → ``stage_2_train_images/<patientId>.dcm``.

Masks: the lung-opacity boxes of ``stage_2_train_labels.csv`` (x, y, width, height in the DICOM's
1024×1024 pixel frame) go into the ``mask`` column as ``box:x,y,w,h;x,y,w,h``, which the dataset layer
rasterises in the image's own pixel coordinates (see :mod:`medmoe.data.manifest`). No mask files are
written. Abnormal test entries without any box are counted under ``no_boxes``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from medmoe.data.sources._base import Layout, Source, report_problems
from medmoe.data.sources._paper_split import paper_split_layout, read_split_file
from medmoe.data.splits import ContentHashes

_IMAGES = "stage_2_train_images"
_LABELS = "stage_2_train_labels.csv"
_BOX_COLUMNS = ("x", "y", "width", "height")


def _resolve(name: str, label: int) -> tuple[str, str] | None:
    """``<patientId>.png`` → (``stage_2_train_images/<patientId>.dcm``, subclass)."""
    patient = name.removesuffix(".png")
    if not patient or "/" in patient:
        return None
    return f"{_IMAGES}/{patient}.dcm", "lung_opacity" if label else "normal"


def box_mask(boxes: list[tuple[float, ...]]) -> str:
    """The ``mask`` value of a list of (x, y, width, height) boxes (``""`` if there are none)."""
    return "box:" + ";".join(",".join(f"{v:g}" for v in box) for box in boxes) if boxes else ""


class Rsna(Source):
    """RSNA Pneumonia Detection Challenge with the DDAD paper split."""

    name = "rsna"
    task = "chest_xray"
    description = "RSNA Pneumonia (Kaggle competition, DICOM) with the paper split; boxes as masks"
    expected = f"{_IMAGES}/<patientId>.dcm, {_LABELS} and splits/data.json"
    origin = ("download stage_2_train_images/ from the Kaggle competition 'rsna-pneumonia-detection-challenge'; "
              "the split file is data/rsna_data.json of github.com/caiyu6666/DDAD")
    terms = "the Kaggle competition rules; not verified"
    user_supplied_images = True

    def has_images(self, root: Path) -> bool:
        folder = root / _IMAGES
        return folder.is_dir() and next(folder.glob("*.dcm"), None) is not None

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        if not (root / _IMAGES).is_dir():
            raise self.layout_error(root, f"no {_IMAGES}/ folder (the DICOM images are not redistributable)")
        boxes = self._read_boxes(root)
        layout = paper_split_layout(root, read_split_file(self, root), _resolve, task)
        no_boxes = []
        for i, s in enumerate(layout.samples):
            if s.label == 1:
                patient = Path(s.path).stem
                layout.samples[i] = replace(s, mask=box_mask(boxes.get(patient, [])))
                if patient not in boxes:
                    no_boxes.append(patient)
        layout.meta["mask"] = "box:x,y,w,h lists in 1024x1024 DICOM pixels"
        report_problems(layout.meta, "no_boxes", no_boxes)
        return layout

    def _read_boxes(self, root: Path) -> dict[str, list[tuple[float, ...]]]:
        """PatientId → its boxes (rows with Target 1)."""
        path = root / _LABELS
        if not path.is_file():
            raise self.layout_error(root, f"no {_LABELS}")
        boxes: dict[str, list[tuple[float, ...]]] = defaultdict(list)
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"patientId", "Target", *_BOX_COLUMNS} - set(reader.fieldnames or ())
            if missing:
                raise self.layout_error(root, f"{_LABELS} lacks column(s) {sorted(missing)}")
            for line, row in enumerate(reader, start=2):
                if row["Target"].strip() != "1":
                    continue
                try:
                    boxes[row["patientId"]].append(tuple(float(row[c]) for c in _BOX_COLUMNS))
                except ValueError:
                    raise self.layout_error(root, f"{_LABELS} line {line}: Target 1 without a numeric box") from None
        return boxes
