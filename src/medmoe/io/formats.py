"""Which file formats medmoe reads, and how a file's format is recognised."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

ImageFormat = Literal["raster", "dicom", "nifti"]

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
RASTER_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES, ".bmp")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

#: Every suffix :func:`medmoe.io.read_image` reads (lower case). ``.nii.gz`` is a double suffix:
#: use :func:`file_suffix` (not ``Path.suffix``) to compare. DICOM files without a suffix are
#: found with :func:`is_dicom`.
SUPPORTED_SUFFIXES: tuple[str, ...] = RASTER_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES

_FORMAT_OF_SUFFIX: dict[str, ImageFormat] = {
    **dict.fromkeys(RASTER_SUFFIXES, "raster"),
    **dict.fromkeys(DICOM_SUFFIXES, "dicom"),
    **dict.fromkeys(NIFTI_SUFFIXES, "nifti"),
}

_DICOM_PREAMBLE_LENGTH = 128
_DICOM_MAGIC = b"DICM"


def file_suffix(path: str | Path) -> str:
    """The lower-case suffix of ``path``, with ``.nii.gz`` kept whole (``scan.NII.GZ`` → ``.nii.gz``)."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def image_suffix(name: str | Path) -> str | None:
    """The image suffix medmoe reads of a file name (lower case, ``.nii.gz`` as one), or ``None``."""
    suffix = file_suffix(name)
    return suffix if suffix in _FORMAT_OF_SUFFIX else None


def image_stem(name: str) -> str:
    """A file name (or relative path) without its image suffix: ``a/scan.nii.gz`` → ``a/scan``;
    names without one are returned unchanged."""
    suffix = image_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def is_dicom(path: str | Path) -> bool:
    """True if the file starts with the DICOM Part 10 preamble (128 bytes, then ``DICM``).

    Reads only the first 132 bytes. Missing or unreadable files are not DICOM (``False``).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_PREAMBLE_LENGTH + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_PREAMBLE_LENGTH:] == _DICOM_MAGIC


def is_image_file(path: str | Path) -> bool:
    """True if :func:`medmoe.io.read_image` would try to read ``path``: a supported suffix, or DICOM."""
    return file_suffix(path) in _FORMAT_OF_SUFFIX or is_dicom(path)


def image_format(path: str | Path) -> ImageFormat | None:
    """The format of ``path``: from its suffix, else ``"dicom"`` if it has the DICOM preamble.

    Returns:
        ``"raster"`` (Pillow), ``"dicom"`` (pydicom), ``"nifti"`` (nibabel), or ``None`` if unknown.
    """
    known = _FORMAT_OF_SUFFIX.get(file_suffix(path))
    if known is not None:
        return known
    return "dicom" if is_dicom(path) else None
