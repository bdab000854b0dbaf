"""Scientific TIFFs Pillow does not decode (float64 or float16 samples, float RGB …), read with tifffile.

:mod:`medmoe.io.raster` reads every TIFF Pillow recognises; a TIFF it cannot identify comes here.
The conventions are the raster ones: ``uint8`` is divided by 255 and ``uint16`` by 65535; every other
sample type (float, signed or 32-bit integers) has no fixed range and is min-max scaled (non-finite
values as in :func:`medmoe.io.intensity.fill_non_finite`). Colour pages keep their three channels
(alpha and extra samples dropped); a two-sample page (gray + alpha) keeps the gray.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from medmoe.errors import ImageReadError
from medmoe.io.choice import Choice, choose_index
from medmoe.io.intensity import scale_min_max
from medmoe.io.policy import check_decoded_size


def count_tiff_pages(path: str | Path) -> int:
    """How many pages the TIFF has (pixels are not decoded)."""
    with _opened(path) as tif:
        return len(tif.pages)


def read_tiff(path: str | Path, *, frame: Choice = None) -> np.ndarray:
    """One page of a TIFF as ``float32`` in ``[0, 1]``: ``(H, W)`` or ``(H, W, 3)``.

    Raises:
        ImageReadError: not a TIFF tifffile reads, a bad ``frame``, a page too large for the input
            policy (checked before decoding), or a page shape that is not an image.
    """
    with _opened(path) as tif:
        index = choose_index(len(tif.pages), frame, path, unit="page", flag="--frame", keyword="frame")
        page = tif.pages[index]
        shape = tuple(page.shape)
        samples = int(getattr(page, "samplesperpixel", 1))
        planar = samples > 1 and len(shape) == 3 and shape[0] == samples
        height, width = shape[1:3] if planar else shape[:2]
        check_decoded_size(path, int(height), int(width))
        try:
            values = page.asarray()
        except Exception as exc:  # tifffile and its codecs raise many types; all mean "cannot decode"
            raise ImageReadError(path, f"its TIFF page {index} could not be decoded ({type(exc).__name__}: {exc})") \
                from exc
    if planar:
        values = np.moveaxis(values, 0, -1)
    return _to_unit(_channels(values, path))


@contextmanager
def _opened(path: str | Path) -> Iterator[tifffile.TiffFile]:
    """``tifffile.TiffFile``, its errors as :class:`ImageReadError`."""
    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(path, f"the file is truncated, corrupt or not a TIFF image ({exc}); re-export or "
                                   "copy it again") from exc
    with tif:
        if not len(tif.pages):
            raise ImageReadError(path, "the TIFF has no readable page: it is truncated or corrupt; re-export or "
                                       "copy it again")
        yield tif


def _channels(values: np.ndarray, path: str | Path) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)``: alpha and extra samples dropped."""
    if values.ndim == 2:
        return values
    if values.ndim == 3 and values.shape[2] >= 2:
        return values[..., 0] if values.shape[2] == 2 else values[..., :3]
    raise ImageReadError(path, f"its TIFF page has shape {values.shape}, not a 2-D gray or colour image")


def _to_unit(values: np.ndarray) -> np.ndarray:
    """Samples → ``float32`` in ``[0, 1]`` (see the module docstring)."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255)
    if values.dtype == np.uint16:
        return values.astype(np.float32) / np.float32(65535)
    return scale_min_max(values.astype(np.float64))
