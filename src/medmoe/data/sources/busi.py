"""BUSI breast ultrasound (Al-Dhabyani et al. 2020; Kaggle ``aryashah2k/breast-ultrasound-images-dataset``).

Serves task ``breast_us``.

Layout, as Kaggle ships it (``ROOT`` may also be ``Dataset_BUSI_with_GT`` itself)::

    ROOT/Dataset_BUSI_with_GT/{normal,benign,malignant}/<class> (N).png
                                                        <class> (N)_mask.png, _mask_1.png, _mask_2.png

Masks: an image with several lesions has one mask file per lesion. The manifest keeps them all, in
the ``mask`` column joined by ``|`` (``benign (4)_mask.png|benign (4)_mask_1.png``), and the dataset
layer ORs them into one mask. No merged mask files are written: the data root stays read-only and
the manifest stays a pure description of files that exist. (Normal images have all-zero masks;
they are listed too.) Mask files whose image is missing are reported as ``unresolved``.

Split (seeded, no official split exists): 99 of the 133 normals train (incl. validation), the other
34 normals and all 647 benign + malignant images test. Byte-identical files stay on one side.
``benign (433)`` = ``malignant (145)`` gets ``label_conflict`` from the duplicate check.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from medmoe.data.manifest import Sample
from medmoe.data.sources._base import Layout, Source, find_dir, list_images, relative, report_problems, split_normals
from medmoe.data.splits import ContentHashes, share

_CLASSES = {"normal": 0, "benign": 1, "malignant": 1}
_MASK = re.compile(r"^(?P<image>.+)_mask(?:_(?P<k>\d+))?$")
_TRAIN_SHARE = (99, 133)  # 99 of the 133 normals


class Busi(Source):
    """BUSI breast ultrasound with lesion masks."""

    name = "busi"
    task = "breast_us"
    description = "BUSI breast ultrasound, normal/benign/malignant + lesion masks; seeded 99/34 normal split"
    expected = "Dataset_BUSI_with_GT/{normal,benign,malignant}/*.png"
    origin = "download from Kaggle 'aryashah2k/breast-ultrasound-images-dataset'"
    terms = "not verified; cite Al-Dhabyani et al., Data in Brief 2020"

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        base = find_dir(root, ("Dataset_BUSI_with_GT", "."), containing=tuple(_CLASSES))
        if base is None:
            raise self.layout_error(root, "no Dataset_BUSI_with_GT/ folder with normal/, benign/ and malignant/")
        samples: list[Sample] = []
        orphans: list[str] = []
        for cls, label in _CLASSES.items():
            images: dict[str, Path] = {}
            masks: dict[str, list[tuple[int, Path]]] = defaultdict(list)
            for path in list_images(base / cls):
                match = _MASK.match(path.stem)
                if match:
                    masks[match["image"]].append((int(match["k"] or 0), path))
                else:
                    images[path.stem] = path
            orphans += [relative(root, p) for stem in sorted(set(masks) - set(images)) for _, p in masks[stem]]
            for stem, path in images.items():
                mask = "|".join(relative(root, p) for _, p in sorted(masks.get(stem, [])))
                samples.append(Sample(path=relative(root, path), task=task, label=label, split="test",
                                      subclass=cls, mask=mask))
        normals = [s for s in samples if s.label == 0]
        normals = split_normals(root, normals, share(len(normals), *_TRAIN_SHARE), seed, hashes)
        meta = {"split": "seeded: 99 of 133 normals train", "mask": "'|'-joined lesion files, to be ORed"}
        report_problems(meta, "unresolved", orphans)
        return Layout(samples=normals + [s for s in samples if s.label == 1], meta=meta)
