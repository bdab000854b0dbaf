"""Brain Tumor MRI (Kaggle ``masoudnickparvar/brain-tumor-mri-dataset``) with the paper split → ``brain_mri``.

Layout (Kaggle download plus the paper's split file from DDAD-ASR)::

    ROOT/Training/{glioma,meningioma,notumor[,pituitary]}/Tr-*.jpg
    ROOT/Testing/{glioma,meningioma,notumor[,pituitary]}/Te-*.jpg
    ROOT/splits/data.json

Split: the paper's (``train/0`` → train normals, ``test/0`` → test normals, ``test/1`` → test
glioma + meningioma; the ``unlabeled`` lists are not used). Its names are bare; a name maps to
``<part>/<class>/<name>`` with ``Tr-`` → ``Training``, ``Te-`` → ``Testing`` and the two letters after
the dash ``gl``/``me``/``no``/``pi`` → ``glioma``/``meningioma``/``notumor``/``pituitary``. Entries
without a file are reported (4 Kaggle notumor files are known to be missing). The split puts copies
of training images in ``test/0``; the duplicate check flags them ``dup_of_train``.
"""

from __future__ import annotations

import re
from pathlib import Path

from medmoe.data.sources._base import Layout, Source
from medmoe.data.sources._paper_split import paper_split_layout, read_split_file
from medmoe.data.splits import ContentHashes

_PARTS = {"Tr": "Training", "Te": "Testing"}
_CLASSES = {"gl": "glioma", "me": "meningioma", "no": "notumor", "pi": "pituitary"}
_NAME = re.compile(r"^(?P<part>Tr|Te)-(?P<cls>gl|me|no|pi)")


def _resolve(name: str, label: int) -> tuple[str, str] | None:
    """Bare split name → (``<part>/<class>/<name>``, class), or ``None`` if the name breaks the rule."""
    match = _NAME.match(name)
    if match is None:
        return None
    cls = _CLASSES[match["cls"]]
    return f"{_PARTS[match['part']]}/{cls}/{name}", cls


class BrainTumor(Source):
    """Brain Tumor MRI with the DDAD-ASR paper split."""

    name = "brain_tumor"
    task = "brain_mri"
    description = "Brain Tumor MRI (Kaggle) with the paper split splits/data.json (1000/600/600 entries)"
    expected = "Training/ and Testing/ with {glioma,meningioma,notumor}/*.jpg, and splits/data.json"
    origin = ("download from Kaggle 'masoudnickparvar/brain-tumor-mri-dataset'; the split file is "
              "data/BrainTumor/data.json of github.com/caiyu6666/DDAD-ASR")
    terms = "CC0 according to a secondary source; not verified"

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        if not any((root / part).is_dir() for part in _PARTS.values()):
            raise self.layout_error(root, "no Training/ or Testing/ folder")
        return paper_split_layout(root, read_split_file(self, root), _resolve, task)
