"""Pixel-value helpers shared by every reader: windowing, min-max scaling, non-finite values, colour.

All functions take and return NumPy arrays and know nothing about files. Output images are
``float32`` in ``[0, 1]``.

Non-finite values (NaN, ±inf — e.g. the NaN background of a registered MRI): NaN is treated as
the lowest finite value of the image (background), +inf as the highest and -inf as the lowest. An
image with no finite value at all carries no information and is refused
(:class:`~medmoe.io.policy.NoFiniteValues`, turned into an ``ImageReadError`` by ``read_image``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from medmoe.io.policy import NoFiniteValues

#: Named CT windows as ``(center, width)`` in Hounsfield units (the usual radiology presets,
#: e.g. Radiopaedia "Windowing (CT)"). ``window="brain"`` is ``window=(40, 80)``.
WINDOW_PRESETS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "brain": (40.0, 80.0),
        "stroke": (40.0, 40.0),
        "subdural": (80.0, 200.0),
        "bone": (400.0, 1800.0),
        "lung": (-600.0, 1500.0),
        "mediastinum": (50.0, 350.0),
        "abdomen": (40.0, 400.0),
        "liver": (30.0, 150.0),
    }
)

#: ITU-R BT.601 luma weights for R, G, B.
BT601_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def resolve_window(window: tuple[float, float] | str) -> tuple[float, float]:
    """Turn a preset name, ``"CENTER,WIDTH"`` text or a ``(center, width)`` pair into a validated
    ``(center, width)``.

    Raises:
        ValueError: unknown preset name, not a pair of numbers, non-finite values or width <= 0.
    """
    if isinstance(window, str) and "," not in window:
        key = window.strip().lower()
        if key not in WINDOW_PRESETS:
            raise ValueError(
                f"unknown window preset {window!r}; use one of {sorted(WINDOW_PRESETS)} or window=(center, width)"
            )
        return WINDOW_PRESETS[key]
    values = window.split(",") if isinstance(window, str) else window
    try:
        center, width = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a preset name, CENTER,WIDTH or a (center, width) pair of numbers, not "
                         f"{window!r}") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"window (center={center}, width={width}) needs finite values and width > 0")
    return center, width


def fill_non_finite(values: np.ndarray) -> np.ndarray:
    """Replace NaN by the lowest finite value, +inf by the highest and -inf by the lowest.

    Args:
        values: any-shape real array.

    Returns:
        ``float64`` array of the same shape.

    Raises:
        NoFiniteValues: no value is finite (or the array is empty).
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.all():
        return values
    if not finite.any():
        raise NoFiniteValues("no finite value")
    low, high = values[finite].min(), values[finite].max()
    return np.nan_to_num(values, nan=low, posinf=high, neginf=low)


def scale_min_max(values: np.ndarray) -> np.ndarray:
    """Scale linearly so the minimum maps to 0 and the maximum to 1.

    Args:
        values: any-shape real array (non-finite values are handled as in :func:`fill_non_finite`).

    Returns:
        ``float32`` array of the same shape in ``[0, 1]``; all zeros for a constant image.
    """
    values = fill_non_finite(values)
    if values.size == 0:
        return values.astype(np.float32)
    return scale_to_range(values, values.min(), values.max())


def scale_to_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly to ``[0, 1]``, clipping values outside.

    Args:
        values: any-shape real array (non-finite values are handled as in :func:`fill_non_finite`).
        low: the value that maps to 0.
        high: the value that maps to 1. If ``high <= low`` the range is empty and the result is
            all zeros (no division by zero).

    Returns:
        ``float32`` array of the same shape in ``[0, 1]``.
    """
    values = fill_non_finite(values)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Window an image: ``center - width/2`` maps to 0, ``center + width/2`` to 1, clipped.

    This is the clinical (and MONAI ``ScaleIntensityRange``) convention, so the brain window
    ``(40, 80)`` shows 0 HU as black, 40 HU as mid-grey (0.5) and 80 HU as white.

    Args:
        values: any-shape real array, e.g. CT values in HU.
        center: window level.
        width: window width, > 0.

    Returns:
        ``float32`` array of the same shape in ``[0, 1]``.
    """
    return scale_to_range(values, center - width / 2.0, center + width / 2.0)


def collapse_gray(image: np.ndarray) -> np.ndarray:
    """Return an ``(H, W, 3)`` image whose three channels are identical as ``(H, W)``.

    Any other array is returned unchanged.
    """
    is_rgb = image.ndim == 3 and image.shape[2] == 3
    if is_rgb and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
        return image[..., 0]
    return image


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Luma of an RGB image (ITU-R BT.601: ``0.299 R + 0.587 G + 0.114 B``).

    Args:
        image: ``(H, W)`` (returned as ``float32``, unchanged in value) or ``(H, W, 3)`` in ``[0, 1]``.

    Returns:
        ``(H, W)`` ``float32`` in ``[0, 1]``.

    Raises:
        ValueError: any other shape.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.ndim == 3 and image.shape[2] == 3:
        luma = image.astype(np.float32) @ np.asarray(BT601_WEIGHTS, dtype=np.float32)
        return np.clip(luma, 0.0, 1.0)
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
