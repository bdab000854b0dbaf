"""Eye Diseases Classification, normal + glaucoma (Kaggle ``gunavenkatdoddi/eye-diseases-classification``) → ``fundus``.

A substitute for LAG when LAG's images are absent. Layout (``ROOT`` may also be ``dataset/`` itself;
``cataract/`` and ``diabetic_retinopathy/`` are not read)::

    ROOT/dataset/{normal,glaucoma}/<name>

Every normal comes from one source, with ODIR-style names ``<id>_<left|right>.jpg``; most glaucoma
images come from other sources, so a detector could tell the classes apart by source. Glaucoma images
whose names are not ODIR-style are therefore kept in test but flagged ``other_source``; the primary
test excludes them.

Split (seeded): 700 of the 1,074 normals train (incl. validation), the other normals test, all
glaucoma test. Both eyes of one patient id stay on one side (here and in the validation carve); a
patient with an ODIR-style glaucoma eye keeps their normal eye in test.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from medmoe.data.manifest import Sample
from medmoe.data.sources._base import Layout, Source, find_dir, list_images, relative, split_normals
from medmoe.data.splits import ContentHashes, share

_ODIR = re.compile(r"^(?P<id>\d+)_(?:left|right)\.jpe?g$", re.IGNORECASE)
_TRAIN_SHARE = (700, 1074)  # 700 of the 1,074 normals


def patient_id(name: str) -> str | None:
    """The patient id of an ODIR-style file name (``1209_left.jpg`` → ``1209``), else ``None``."""
    match = _ODIR.match(name)
    return match["id"] if match else None


class EyeDiseases(Source):
    """Eye Diseases Classification, normal and glaucoma classes."""

    name = "eye_diseases"
    task = "fundus"
    description = ("Eye Diseases fundus photos (Kaggle), normal + glaucoma; seeded 700 normal train, "
                   "non-ODIR glaucoma flagged other_source; substitute for LAG")
    expected = "dataset/{normal,glaucoma}/*.jpg"
    origin = "download from Kaggle 'gunavenkatdoddi/eye-diseases-classification'"
    terms = "not verified; research use only"

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        base = find_dir(root, ("dataset", "."), containing=("normal", "glaucoma"))
        if base is None:
            raise self.layout_error(root, "no dataset/ folder with normal/ and glaucoma/")
        glaucoma = [
            Sample(path=relative(root, p), task=task, label=1, split="test", subclass="glaucoma",
                   flags=() if patient_id(p.name) else ("other_source",))
            for p in list_images(base / "glaucoma")
        ]
        both_classes = {patient_id(PurePosixPath(s.path).name) for s in glaucoma} - {None}
        normals = [Sample(path=relative(root, p), task=task, label=0, split="test", subclass="normal")
                   for p in list_images(base / "normal")]
        pool = [s for s in normals if self.group_key(s) not in both_classes]
        kept_in_test = [s for s in normals if self.group_key(s) in both_classes]
        n_train = min(share(len(normals), *_TRAIN_SHARE), len(pool))
        pool = split_normals(root, pool, n_train, seed, hashes, groups=[self.group_key(s) for s in pool])
        meta = {
            "split": "seeded: 700 of 1074 normals train, grouped by patient id",
            "other_source": str(sum("other_source" in s.flags for s in glaucoma)),
            "normals_with_glaucoma_fellow_eye": str(len(kept_in_test)),
        }
        return Layout(samples=pool + kept_in_test + glaucoma, meta=meta)

    def group_key(self, sample: Sample) -> str:
        """The patient id for ODIR-style names (both eyes together), else the path."""
        return patient_id(PurePosixPath(sample.path).name) or sample.path
