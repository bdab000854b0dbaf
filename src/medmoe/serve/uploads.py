"""Uploaded image bytes: recognise the format by content, and hand them to the readers as a file.

A browser's file name and content type say little (``scan`` without a suffix, DICOM sent as
``application/octet-stream``), so the format is taken from the bytes themselves. The readers of
:mod:`medmoe.io` pick their decoder by suffix, so the upload is written, under the suffix its
content calls for, into a private temporary folder that is removed as soon as the request is done.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Leading bytes of the raster formats Pillow reads for :func:`medmoe.io.read_image`.
_RASTER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"BM", ".bmp"),
)
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_GZIP_MAGIC = b"\x1f\x8b"
#: NIfTI-1 single file: ``sizeof_hdr`` = 348 at 0, magic ``n+1\0`` at 344.
_NIFTI1 = (348, 344, b"n+1\x00")
#: NIfTI-2 single file: ``sizeof_hdr`` = 540 at 0, magic ``n+2\0`` at 4.
_NIFTI2 = (540, 4, b"n+2\x00")
_NIFTI_HEADER_BYTES = 352

#: What the service accepts, for error messages and the page's file picker.
ACCEPTED_FORMATS = "PNG, JPEG, TIFF, BMP, DICOM (with the 128-byte preamble and 'DICM') or NIfTI (.nii / .nii.gz)"


def sniff_suffix(data: bytes) -> str | None:
    """The file suffix that :func:`medmoe.io.read_image` needs for ``data``, judged by content.

    Args:
        data: the whole upload (only the first few hundred bytes are looked at, plus the first
            352 decompressed bytes of a gzip stream).

    Returns:
        ``.png``, ``.jpg``, ``.tif``, ``.bmp``, ``.dcm``, ``.nii`` or ``.nii.gz``; ``None`` when
        the bytes are none of these formats.
    """
    # DICOM first: its free-form 128-byte preamble may itself hold a TIFF header (dual-format files).
    if data[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
        return ".dcm"
    for magic, suffix in _RASTER_MAGIC:
        if data.startswith(magic):
            return suffix
    if _is_nifti_header(data):
        return ".nii"
    if data.startswith(_GZIP_MAGIC) and _is_nifti_header(_gunzip_head(data, _NIFTI_HEADER_BYTES)):
        return ".nii.gz"
    return None


def _is_nifti_header(head: bytes) -> bool:
    """True if ``head`` starts with a single-file NIfTI-1 or NIfTI-2 header (either byte order)."""
    for size, magic_offset, magic in (_NIFTI1, _NIFTI2):
        if len(head) < magic_offset + len(magic) or head[magic_offset:magic_offset + len(magic)] != magic:
            continue
        if size in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
            return True
    return False


def _gunzip_head(data: bytes, n: int) -> bytes:
    """Up to the first ``n`` decompressed bytes of a gzip stream; ``b""`` if it is not valid gzip."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, n)
    except zlib.error:
        return b""


@contextmanager
def upload_as_file(data: bytes, suffix: str) -> Iterator[Path]:
    """Write ``data`` to a fresh private temporary folder as ``upload<suffix>``; remove it on exit.

    Args:
        data: the uploaded bytes.
        suffix: the suffix from :func:`sniff_suffix`.

    Yields:
        The path of the file, valid inside the ``with`` block only.
    """
    with tempfile.TemporaryDirectory(prefix="medmoe-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        yield path
