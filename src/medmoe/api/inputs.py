"""What a folder run scores: the images named by files and folders, each with a unique output name.

``<name>``: the file's path relative to the folder given on the command line, without its suffix, with
``_frame007``/``_slice040`` when ``--frame all`` or ``--slice all`` makes several images of one file;
unique, ``_2``, ``_3`` … appended on a clash. A run writes ``<name>_overlay.png`` and ``<name>_maps.npz``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medmoe.io import Plane, is_image_file, planes
from medmoe.io.choice import Choice
from medmoe.io.discovery import walk_files
from medmoe.io.formats import image_stem


@dataclass(frozen=True)
class InputFile:
    """One image to score: a file, or one frame or slice of it.

    Attributes:
        plane: the file and, for files with several, the frame or slice.
        name: its output name: relative path without suffix (``_frame007``/``_slice040`` appended when
            a file gives several images), ``/``-separated, unique in the run.
    """

    plane: Plane
    name: str

    @property
    def path(self) -> Path:
        """The file."""
        return self.plane.path


@dataclass
class Inputs:
    """What :func:`collect_inputs` found.

    Attributes:
        items: the images to score, in order.
        notes: folders not searched (:attr:`medmoe.io.discovery.Walk.notes`: links back to a folder
            already searched, folders that cannot be listed).
    """

    items: list[InputFile]
    notes: list[str]


def collect_inputs(paths: Sequence[str | Path], exclude: str | Path | None = None, *, frame: Choice = None,
                   slice_index: Choice = None) -> Inputs:
    """The images named by ``paths``, in order.

    A folder contributes every image file below it (:func:`medmoe.io.is_image_file`: a supported
    suffix or the DICOM preamble), sorted, found by :func:`medmoe.io.discovery.walk_files` (hidden
    entries skipped, folder links followed once, broken links kept so the run says why they cannot
    be read), skipping anything under ``exclude`` (the output folder). A file is taken as given, even
    with an unknown suffix or when missing, so that the run reports why it cannot be read.

    ``frame`` and ``slice_index`` are resolved per file by :func:`medmoe.io.planes`: ``all`` makes
    every frame (slice) its own image, a policy name becomes the index it picks.
    """
    found: list[tuple[Path, str]] = []
    notes: list[str] = []
    skip = Path(exclude).resolve() if exclude is not None else None
    for given in map(Path, paths):
        if not given.is_dir():
            found.append((given, image_stem(given.name)))
            continue
        walk = walk_files(given)
        notes.extend(walk.notes)
        for file in walk.files:
            if skip is not None and Path(os.path.realpath(file)).is_relative_to(skip):  # a loop cannot resolve()
                continue
            if is_image_file(file):  # a broken link counts by its suffix
                found.append((file, image_stem(file.relative_to(given).as_posix())))
    items = []
    for path, name in found:
        chosen = planes(path, frame=frame, slice_index=slice_index)
        items += [(plane, _plane_name(name, plane) if len(chosen) > 1 else name) for plane in chosen]
    return Inputs(_unique(items), notes)


def _plane_name(name: str, plane: Plane) -> str:
    """The output name of one of several planes of a file: ``<name>_frame007`` or ``<name>_slice040``."""
    unit = "frame" if plane.frame is not None else "slice"
    return f"{name}_{unit}{plane.index:03d}"


def _unique(found: Iterable[tuple[Plane, str]]) -> list[InputFile]:
    """Make output names unique by appending ``_2``, ``_3`` … to repeats."""
    taken: set[str] = set()
    inputs = []
    for plane, name in found:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        inputs.append(InputFile(plane, candidate))
    return inputs

