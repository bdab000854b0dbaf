"""``read_image``: one image file of any supported format → a ``float32`` array in ``[0, 1]``;
``planes``: the 2-D images a frame/slice choice stands for in a file (every frame for ``all``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmoe.errors import ImageReadError
from medmoe.io.choice import Choice, Plane, resolve_choice
from medmoe.io.dicom import count_dicom_frames, read_dicom
from medmoe.io.discovery import broken_link_reason
from medmoe.io.formats import SUPPORTED_SUFFIXES, ImageFormat, file_suffix, image_format
from medmoe.io.intensity import collapse_gray, resolve_window
from medmoe.io.nifti import count_axial_slices, read_nifti
from medmoe.io.policy import NoFiniteValues, no_finite_values
from medmoe.io.raster import count_pages, read_raster

# Which keyword arguments each format accepts.
_FRAME_FORMATS: frozenset[ImageFormat] = frozenset({"dicom", "raster"})
_SLICE_FORMATS: frozenset[ImageFormat] = frozenset({"nifti"})
_WINDOW_FORMATS: frozenset[ImageFormat] = frozenset({"dicom", "nifti"})


def read_image(
    path: str | Path,
    *,
    frame: Choice = None,
    slice_index: Choice = None,
    window: tuple[float, float] | str | None = None,
) -> np.ndarray:
    """Read one 2-D image from a PNG/JPEG/TIFF/BMP, DICOM or NIfTI file.

    The format comes from the suffix (:data:`medmoe.io.SUPPORTED_SUFFIXES`); a file without a
    known suffix is read as DICOM if it has the ``DICM`` preamble. Format-specific conventions
    (bit depth, alpha, EXIF, Modality/VOI LUT, MONOCHROME1, orientation) are documented in
    :mod:`medmoe.io.raster`, :mod:`medmoe.io.dicom` and :mod:`medmoe.io.nifti`; NaN/inf handling
    in :mod:`medmoe.io.intensity`.

    The input policy (:mod:`medmoe.io.policy`: size limits checked from the header, at least one
    finite value) is applied to every file.

    A colour image whose three channels are identical (a grayscale picture saved as RGB) is
    returned as ``(H, W)``: the shape says what the pixels are, not how the file stored them.

    Args:
        path: the image file.
        frame: frame of a multi-frame DICOM or page of a multi-page TIFF: an index (0-based) or
            ``first``/``middle``/``last`` (:mod:`medmoe.io.choice`); required for those files,
            ignored by files with one.
        slice_index: axial slice of a 3-D NIfTI volume (0-based, from inferior, or a policy
            name); required for volumes with more than one slice.
        window: DICOM and NIfTI only: ``(center, width)`` in the file's units (HU for CT) or a
            preset name from :data:`medmoe.io.WINDOW_PRESETS` (``"brain"`` = ``(40, 80)``);
            ``center - width/2`` maps to 0 and ``center + width/2`` to 1. Default: the DICOM
            file's own window (VOI), else min-max scaling.

    Returns:
        ``float32``, C-contiguous, values in ``[0, 1]``: ``(H, W)`` grayscale or ``(H, W, 3)`` RGB.

    Raises:
        ImageReadError: for every failure, naming the file, the cause and what to do.
    """
    fmt = _check_file(path)
    resolved = _check_arguments(path, fmt, frame=frame, slice_index=slice_index, window=window)
    try:
        if fmt == "dicom":
            image = read_dicom(path, frame=frame, window=resolved)
        elif fmt == "nifti":
            image = read_nifti(path, slice_index=slice_index, window=resolved)
        else:
            image = read_raster(path, frame=frame)
    except NoFiniteValues:
        raise no_finite_values(path) from None
    return np.ascontiguousarray(collapse_gray(image), dtype=np.float32)


def count_planes(path: str | Path) -> int:
    """How many frames (DICOM), pages (TIFF) or axial slices (NIfTI) ``path`` has, from its header.

    Raises:
        ImageReadError: as :func:`read_image`, for a file whose header cannot be read.
    """
    fmt = _check_file(path)
    if fmt == "dicom":
        return count_dicom_frames(path)
    return count_axial_slices(path) if fmt == "nifti" else count_pages(path)


def planes(path: str | Path, *, frame: Choice = None, slice_index: Choice = None) -> list[Plane]:
    """The 2-D images of ``path`` that ``frame`` and ``slice_index`` stand for, each as a :class:`Plane`.

    ``frame`` applies to DICOM and TIFF and ``slice_index`` to NIfTI; each is ignored by the other
    formats, so one pair can be given for a folder of mixed files. ``all`` gives every frame (or slice)
    its own plane; a policy name (``middle``) is resolved to its index from the header. A file with a
    single one gets one plane without a choice. A choice the file cannot satisfy, or a header that
    cannot be read, is passed through unresolved: :func:`read_image` then says why.

    ::

        for plane in planes("cine.dcm", frame="all"):
            detector.predict(plane, task="busi")
    """
    file = Path(path)
    fmt = image_format(file) if file.is_file() else None
    if fmt is None:
        return [Plane(file, frame=frame, slice_index=slice_index)]  # the read says what is wrong
    nifti = fmt in _SLICE_FORMATS  # the formats read_image takes slice_index for; the others take frame
    choice = slice_index if nifti else frame

    def plane(chosen: Choice) -> Plane:
        return Plane(file, slice_index=chosen) if nifti else Plane(file, frame=chosen)

    if choice is None:
        return [Plane(file)]
    try:
        count = count_planes(file)
    except ImageReadError:
        return [plane(choice)]
    indices = resolve_choice(count, choice)
    if count == 1 or indices is None:
        return [plane(None if count == 1 else choice)]
    return [plane(index) for index in indices]


def read_plane(plane: Plane, *, window: tuple[float, float] | str | None = None) -> np.ndarray:
    """:func:`read_image` of one :class:`Plane`."""
    return read_image(plane.path, frame=plane.frame, slice_index=plane.slice_index, window=window)


def window_for(path: str | Path, window: tuple[float, float] | None) -> tuple[float, float] | None:
    """``window`` if it applies to ``path`` (DICOM and NIfTI hold values a window maps; PNG/JPEG/TIFF/BMP
    hold display values), else ``None``: how a task's window is applied to a folder of mixed files."""
    return window if window is not None and image_format(path) in _WINDOW_FORMATS else None


def _check_file(path: str | Path) -> ImageFormat:
    """The format of an existing, non-empty regular file, or an :class:`ImageReadError`."""
    file = Path(path)
    if not file.exists():
        raise ImageReadError(path, broken_link_reason(file) or f"no such file (looked for {file.absolute()}); "
                                                               "check the path")
    if file.is_dir():
        raise ImageReadError(path, "it is a folder, not an image file; pass one of the image files inside it")
    if file.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes), probably an interrupted copy; copy it again")
    fmt = image_format(file)
    if fmt is None:
        raise ImageReadError(
            path,
            f"unknown image format {file_suffix(file) or '(no suffix)'!r}; medmoe reads "
            f"{' '.join(SUPPORTED_SUFFIXES)} and DICOM files with the 'DICM' preamble",
        )
    return fmt


def _check_arguments(
    path: str | Path,
    fmt: ImageFormat,
    *,
    frame: Choice,
    slice_index: Choice,
    window: tuple[float, float] | str | None,
) -> tuple[float, float] | None:
    """Reject keyword arguments that do not apply to ``fmt``; return the resolved window."""
    if frame is not None and fmt not in _FRAME_FORMATS:
        raise ImageReadError(
            path, "frame= (--frame) applies to multi-frame DICOM and multi-page TIFF; for NIfTI use "
                  "slice_index= (--slice)"
        )
    if slice_index is not None and fmt not in _SLICE_FORMATS:
        raise ImageReadError(path, "slice_index= (--slice) applies to NIfTI volumes; for multi-frame DICOM use "
                                   "frame= (--frame)")
    if window is None:
        return None
    if fmt not in _WINDOW_FORMATS:
        raise ImageReadError(
            path, "window= applies to DICOM and NIfTI values (e.g. HU); PNG/JPEG/TIFF/BMP pixels are display values"
        )
    try:
        return resolve_window(window)
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from exc
