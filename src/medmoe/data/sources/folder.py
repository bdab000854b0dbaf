"""A generic folder layout for users' own data → any task (``--task`` is required).

Layout (images at any depth inside each class folder)::

    ROOT/train/normal/…            training normals (required)
    ROOT/val/normal/…              validation normals (optional; if present, no validation carve)
    ROOT/test/normal/…             test normals
    ROOT/test/abnormal/…           test abnormals; subclass = first subfolder under abnormal/, if any
    ROOT/masks/…                   optional masks of test abnormals

Mask rule: the mask of ``test/abnormal/<sub>/<name>.<ext>`` is ``masks/<sub>/<name>.<ext2>`` — the same
relative path with any image suffix (a JPEG image may have a PNG mask). Non-zero mask pixels are
abnormal. Two mask files for one image are an error; masks that match no image are reported under
``unmatched_masks``. ``train/abnormal`` and ``val/abnormal`` are not used (training sees normals
only) and are counted under ``ignored``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path, PurePosixPath

from medmoe.data.manifest import Sample
from medmoe.data.sources._base import Layout, Source, list_images, relative, report_problems
from medmoe.data.splits import ContentHashes
from medmoe.errors import DatasetError
from medmoe.io.formats import image_stem

_USED = {("train", "normal"): ("train", 0), ("val", "normal"): ("val", 0),
         ("test", "normal"): ("test", 0), ("test", "abnormal"): ("test", 1)}
_IGNORED = (("train", "abnormal"), ("val", "abnormal"))


def _key(relative_path: PurePosixPath) -> tuple[str, str]:
    """How an abnormal image and its mask are matched: folder and name without image suffix."""
    return relative_path.parent.as_posix(), image_stem(relative_path.name)


class Folder(Source):
    """Users' own data in ``{train,val,test}/{normal,abnormal}`` folders."""

    name = "folder"
    task = None
    description = "your own data: ROOT/{train,test}/{normal,abnormal}/…, optional val/normal and masks/ (--task)"
    expected = "train/normal/ (and test/normal/, test/abnormal/, optionally val/normal/ and masks/)"
    origin = "see 'medmoe data sources' and the medmoe.data.sources.folder docs"
    terms = "your own data: not recorded"

    def read(self, root: Path, *, task: str, seed: int, hashes: ContentHashes) -> Layout:
        if not list_images(root / "train" / "normal", recursive=True):
            raise self.layout_error(root, "no images in train/normal/")
        masks = self._mask_index(root)
        used_masks: set[tuple[str, str]] = set()
        samples: list[Sample] = []
        for (part, cls), (split, label) in _USED.items():
            folder = root / part / cls
            for path in list_images(folder, recursive=True):
                inner = PurePosixPath(relative(folder, path))
                mask = ""
                if label == 1:
                    used_masks.add(_key(inner))
                    mask = self._mask_of(root, path, masks.get(_key(inner), []))
                subclass = inner.parts[0] if label == 1 and len(inner.parts) > 1 else cls
                samples.append(Sample(path=relative(root, path), task=task, label=label, split=split,
                                      subclass=subclass, mask=mask))
        meta = {"split": "folders train/, val/, test/"}
        ignored = [f"{n} {part}/{cls}" for part, cls in _IGNORED
                   if (n := len(list_images(root / part / cls, recursive=True)))]
        if ignored:
            meta["ignored"] = ", ".join(ignored)
        if masks:
            unmatched = [p for key in sorted(set(masks) - used_masks) for p in masks[key]]
            report_problems(meta, "unmatched_masks", unmatched)
        return Layout(samples=samples, meta=meta)

    @staticmethod
    def _mask_index(root: Path) -> dict[tuple[str, str], list[str]]:
        """Mask files under ``masks/`` by matching key, as paths relative to the root."""
        index: dict[tuple[str, str], list[str]] = defaultdict(list)
        for path in list_images(root / "masks", recursive=True):
            index[_key(PurePosixPath(relative(root / "masks", path)))].append(relative(root, path))
        return index

    @staticmethod
    def _mask_of(root: Path, image: Path, candidates: list[str]) -> str:
        if len(candidates) > 1:
            raise DatasetError(
                f"folder: image '{image}' has {len(candidates)} mask files ({', '.join(candidates)}) "
                f"under '{root / 'masks'}'; keep one per image (same relative path, any image suffix)"
            )
        return candidates[0] if candidates else ""
