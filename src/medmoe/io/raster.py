"""PNG, JPEG, TIFF and BMP files, read with Pillow.

Conventions (see :func:`read_raster`):

- 8-bit values are divided by 255 and 16-bit values (Pillow modes ``I;16*``) by 65535, so the
  full range of the file's bit depth maps to ``[0, 1]`` (no stretching, no clipping).
- 32-bit integer (``I``) and float (``F``) images have no fixed range and are min-max scaled.
- Alpha is *ignored* (dropped, as ``Image.convert("RGB")`` does): transparent pixels keep
  their stored colour. Palette images are expanded to RGB, 1-bit images to 0/1.
- The EXIF orientation tag is applied, so the array is upright as a photo viewer shows it.
- The whole file is decoded before returning, so a truncated or corrupt file fails here.
  ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left at Pillow's default (False).
- Multi-page TIFFs need ``frame=`` (0-based page index).
- TIFFs whose samples Pillow does not decode (float64, float16, float RGB) are read by
  :mod:`medmoe.io.tiff` (tifffile) with the same conventions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from medmoe.errors import ImageReadError
from medmoe.io.choice import Choice, choose_index
from medmoe.io.formats import TIFF_SUFFIXES, file_suffix
from medmoe.io.intensity import scale_min_max
from medmoe.io.policy import NoFiniteValues, check_decoded_size
from medmoe.io.tiff import count_tiff_pages, read_tiff

_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_UNBOUNDED_MODES = frozenset({"I", "F"})


def read_raster(path: str | Path, *, frame: Choice = None) -> np.ndarray:
    """Read a PNG/JPEG/TIFF/BMP file.

    Args:
        path: the image file.
        frame: page of a multi-page TIFF (an index, or first/middle/last); required for those,
            ignored for single-page files.

    Returns:
        ``float32`` in ``[0, 1]``: ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour.

    Raises:
        ImageReadError: not an image Pillow recognises, truncated or corrupt, or a bad ``frame``.
    """
    try:
        with Image.open(path) as image:
            _seek_frame(image, path, frame)
            check_decoded_size(path, image.height, image.width)  # from the header, before decoding
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_array(upright)
    except (ImageReadError, NoFiniteValues):
        raise
    except Image.UnidentifiedImageError as exc:
        if file_suffix(path) in TIFF_SUFFIXES:
            return read_tiff(path, frame=frame)  # float64, float16, float RGB …: samples Pillow does not decode
        raise _corrupt(path, exc) from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"{exc}; raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _corrupt(path, exc) from exc


def _corrupt(path: str | Path, exc: Exception) -> ImageReadError:
    """The error of a file Pillow cannot read."""
    return ImageReadError(path, f"the file is truncated, corrupt or not a PNG/JPEG/TIFF/BMP image ({exc}); "
                                "re-export or copy the file again")


def count_pages(path: str | Path) -> int:
    """How many pages a raster file has (several only for multi-page TIFF); the pixels are not decoded.

    Raises:
        ImageReadError: not an image Pillow (or, for TIFF, tifffile) recognises.
    """
    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except Image.UnidentifiedImageError as exc:
        if file_suffix(path) in TIFF_SUFFIXES:
            return count_tiff_pages(path)
        raise _corrupt(path, exc) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _corrupt(path, exc) from exc


def _seek_frame(image: Image.Image, path: str | Path, frame: Choice) -> None:
    """Move a multi-page image to the page ``frame`` picks (:mod:`medmoe.io.choice`)."""
    index = choose_index(getattr(image, "n_frames", 1), frame, path, unit="page", flag="--frame", keyword="frame")
    if index:
        image.seek(index)


def _to_array(image: Image.Image) -> np.ndarray:
    """Pillow image → ``float32`` ``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]`` (see module docstring)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image, dtype=np.float32) / np.float32(65535)
    if mode in _UNBOUNDED_MODES:
        return scale_min_max(np.asarray(image))
    target = "L" if mode in _GRAY_MODES else "RGB"
    return np.asarray(image.convert(target), dtype=np.float32) / 255.0
