"""Kermany pediatric chest X-ray (Kaggle ``paultimothymooney/chest-xray-pneumonia``) → ``chest_xray``.

A substitute for RSNA when RSNA's images are absent. Layout (``ROOT`` is the download root, or the
inner ``chest_xray/`` folder itself)::

    ROOT/chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg

Split: the dataset's own — ``train/NORMAL`` → train, ``test/NORMAL`` and ``test/PNEUMONIA`` → test.
``train/PNEUMONIA`` and Kaggle's tiny ``val/`` (8 + 8) are not used and are counted under
``ignored``; the duplicate inner tree and ``__MACOSX/`` of the Kaggle archive are never read.
Pneumonia subclass: ``bacteria`` or ``virus`` from the file name (``personN_bacteria_M.jpeg``),
else ``pneumonia``.
"""

from __future__ import annotations

import re
from pathlib import Path

from medmoe.data.manifest import Sample
from medmoe.data.sources._base import Layout, Source, find_dir, list_images, relative
from medmoe.data.splits import ContentHashes

_KIND = re.compile(r"_(bacteria|virus)_", re.IGNORECASE)
_USED = {("train", "NORMAL"): ("train", 0), ("test", "NORMAL"): ("test", 0), ("test", "PNEUMONIA"): ("test", 1)}
_IGNORED = (("train", "PNEUMONIA"), ("val", "NORMAL"), ("val", "PNEUMONIA"))


def _subclass(path: Path, label: int) -> str:
    if label == 0:
        return "normal"
    match = _KIND.search(path.name)
    return match[1].lower() if match else "pneumonia"


class ChestXray(Source):
    """Kermany chest X-ray (pneumonia), the dataset's own train/test folders."""

    name = "chest_xray"
    task = "chest_xray"
    description = "Kermany pediatric chest X-ray (Kaggle), its own train/test; substitute for RSNA"
    expected = "chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg"
    origin = "download from Kaggle 'paultimothymooney/chest-xray-pneumonia'"
    terms = "CC BY 4.0; cite Kermany et al., Cell 2018"

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        base = find_dir(root, ("chest_xray", "."), containing=("train/NORMAL", "test/NORMAL", "test/PNEUMONIA"))
        if base is None:
            raise self.layout_error(root, "no chest_xray/ folder with train/NORMAL, test/NORMAL and test/PNEUMONIA")
        samples = [
            Sample(path=relative(root, p), task=task, label=label, split=split, subclass=_subclass(p, label))
            for (part, cls), (split, label) in _USED.items()
            for p in list_images(base / part / cls)
        ]
        ignored = [f"{len(files)} {part}/{cls}" for part, cls in _IGNORED if (files := list_images(base / part / cls))]
        meta = {"split": "dataset's own train/test folders"}
        if ignored:
            meta["ignored"] = ", ".join(ignored)
        return Layout(samples=samples, meta=meta)
