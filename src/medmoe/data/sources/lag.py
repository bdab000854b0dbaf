"""LAG glaucoma fundus photos (Li et al., distributed by its authors) with the paper split → ``fundus``.

Layout (the images must be supplied by the user; either form)::

    ROOT/LAG/{non_glaucoma,suspicious_glaucoma}/image/<name>.jpg    # the released archive
    ROOT/images/<name>.jpg                                          # flat, as DDAD-ASR expects
    ROOT/splits/data.json

Split: the paper's (``train/0`` 1,500 normals, ``test/0`` 811, ``test/1`` 811 glaucoma). A name under
label 0 maps to ``non_glaucoma/image/<name>``, under label 1 to ``suspicious_glaucoma/image/<name>``
(inferred from the archive, not verified; see the dataset's NOTE.md). When the class folders are
absent, the flat ``images/`` folder is used.
"""

from __future__ import annotations

from pathlib import Path

from medmoe.data.sources._base import Layout, Source, list_images
from medmoe.data.sources._paper_split import Resolver, paper_split_layout, read_split_file
from medmoe.data.splits import ContentHashes

_CLASSES = ("non_glaucoma", "suspicious_glaucoma")  # label 0, label 1


class Lag(Source):
    """LAG with the DDAD-ASR paper split."""

    name = "lag"
    task = "fundus"
    description = "LAG glaucoma fundus photos (from its authors) with the paper split (1500/811/811)"
    expected = ("LAG/{non_glaucoma,suspicious_glaucoma}/image/*.jpg (or a flat images/ folder) "
                "and splits/data.json")
    origin = ("LAG is available from its authors on request (github.com/smilell/AG-CNN); the split file is "
              "data/LAG/data.json of github.com/caiyu6666/DDAD-ASR")
    terms = "academic use only; no redistribution"
    user_supplied_images = True

    def has_images(self, root: Path) -> bool:
        return self._resolver(root) is not None

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        resolve = self._resolver(root)
        if resolve is None:
            raise self.layout_error(root, "no images (neither LAG/<class>/image/ nor images/ holds any)")
        return paper_split_layout(root, read_split_file(self, root), resolve, task)

    @staticmethod
    def _resolver(root: Path) -> Resolver | None:
        """The name rule of the image layout found under ``root``, or ``None`` if there are no images."""
        for prefix in ("LAG/", ""):
            if any(list_images(root / f"{prefix}{cls}/image") for cls in _CLASSES):
                return lambda name, label, p=prefix: (f"{p}{_CLASSES[label]}/image/{name}", _CLASSES[label])
        if list_images(root / "images"):
            return lambda name, label: (f"images/{name}", _CLASSES[label])
        return None
