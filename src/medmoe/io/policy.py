"""The input policy every entry point applies (CLI, Python API, REST): what medmoe refuses to score.

- **decoded size** (:func:`check_decoded_size`, by :func:`medmoe.io.read_image` from the file's
  header before any pixel is decoded): at most :data:`MAX_PIXELS` (a 97 KB PNG can decode to 10000²,
  1.7 GB);
- **values** (by ``read_image``): at least one finite pixel value (an all-NaN float TIFF is refused;
  a partly NaN image follows the stated rule of :mod:`medmoe.io.intensity`: NaN is background);
- **smallest side** (:func:`check_scorable`, by the :class:`~medmoe.api.detector.Detector` — hence
  ``medmoe detect`` and the REST API — and by training's data loading): each side at least
  :data:`MIN_SIDE` pixels (a 1×1 PNG or a 1×4000 line holds no anatomy);
- **constant images** are scored but flagged (:func:`constant_note`): there is nothing to detect.

Raise :data:`MAX_PIXELS` (``medmoe.io.policy.MAX_PIXELS = …``) to read larger images on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmoe.errors import ImageReadError

MIN_SIDE = 8
"""Smallest accepted image side, in pixels."""
MAX_PIXELS = 64_000_000
"""Largest accepted number of decoded pixels (8000 × 8000; a 6000² photograph is 36 M)."""


class NoFiniteValues(ValueError):
    """Raised by :func:`medmoe.io.intensity.fill_non_finite` for an image without a finite value."""


def check_scorable(path: str | Path, image: np.ndarray) -> None:
    """Refuse a decoded image ``(H, W[, 3])`` with a side under :data:`MIN_SIDE` pixels."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageReadError(path, f"it is {height}×{width} pixels; medmoe needs at least {MIN_SIDE} pixels a side "
                                   "(an icon or a line holds no anatomy to score)")


def check_decoded_size(path: str | Path, height: int, width: int) -> None:
    """Refuse an image that would decode to more than :data:`MAX_PIXELS` pixels (call before decoding)."""
    if height * width > MAX_PIXELS:
        raise ImageReadError(path, f"it decodes to {height}×{width} = {height * width / 1e6:.0f} M pixels, more "
                                   f"than the {MAX_PIXELS / 1e6:.0f} M medmoe reads; downsample it first (or raise "
                                   "medmoe.io.policy.MAX_PIXELS if you mean it)")


def no_finite_values(path: str | Path) -> ImageReadError:
    """The error for an image whose pixel values are all NaN or ±inf."""
    return ImageReadError(path, "no pixel value is finite (all NaN or ±inf): there is nothing to score; check "
                                "how the file was exported")


def constant_note(image: np.ndarray) -> str | None:
    """A warning for a constant image (every pixel the same value), else ``None``."""
    if image.size and float(image.max()) - float(image.min()) <= 1e-6:
        return (f"the image is constant (every pixel {float(image.flat[0]):.3g}): there is nothing to detect, "
                "and the score only says how far a blank image is from normal")
    return None
