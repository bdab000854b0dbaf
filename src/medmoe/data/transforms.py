"""Preprocessing of one decoded image and its lesion mask into model-sized tensors.

These are the only transforms between a file and the model, shared by training (the dataset) and
inference, so both see identical pixels:

- **Channels**: a colour image becomes grayscale luma (ITU-R BT.601, :func:`medmoe.io.to_grayscale`)
  for 1-channel tasks; a gray image is repeated for 3-channel tasks.
- **Size**: every image is *squashed* to ``R × R`` (aspect ratio not kept), as the paper resizes all
  images to 256 × 256. The resampling is antialiased bilinear: Pillow's ``BILINEAR`` on a
  ``float32`` (mode ``F``) image, i.e. a triangle filter widened by the downscale factor, so no 8-bit
  rounding happens before resizing. It equals ``torch.nn.functional.interpolate(mode="bilinear",
  antialias=True)`` to within 3e-7; it is computed without torch so that the ONNX backend of the
  :class:`~medmoe.api.detector.Detector` runs without torch and still sees the training pixels.
- **Range**: the model's input range is ``[0, 1]`` (values are clamped after resampling); there is
  no mean/std standardisation.
- **Masks** use the *any-pixel* rule: an output pixel is lesion if any source pixel it overlaps is
  lesion (adaptive max pooling: output row ``i`` covers source rows ``floor(i·H/R)`` to
  ``ceil((i+1)·H/R)``), so a lesion never vanishes when shrunk and the output is exactly ``{0, 1}``.

A mask may be given, in a manifest, as bounding boxes ``box:x,y,w,h;x,y,w,h`` in the image's own
pixel coordinates (``x`` = column of the left edge, ``y`` = row of the top edge); :func:`rasterize_boxes`
turns them into a boolean mask: a pixel is inside a box if its unit square overlaps the box.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from medmoe.errors import DatasetError
from medmoe.io import to_grayscale

BOX_PREFIX = "box:"
"""The prefix of a bounding-box mask specification in a manifest's ``mask`` column."""


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, 3)`` image as ``(C, H, W)`` ``float32``.

    Args:
        image: decoded image in ``[0, 1]``.
        channels: 1 (colour → BT.601 luma) or 3 (gray → repeated).

    Returns:
        ``(channels, H, W)`` ``float32``.
    """
    if channels == 1:
        return to_grayscale(image)[None]
    if channels == 3:
        if image.ndim == 2:
            return np.repeat(image[None].astype(np.float32), 3, axis=0)
        return np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)
    raise ValueError(f"channels must be 1 or 3, not {channels}")


def resize_image(image: np.ndarray, resolution: int) -> np.ndarray:
    """Squash a ``(C, H, W)`` image to ``(C, R, R)`` with antialiased bilinear resampling.

    Returns:
        ``(C, resolution, resolution)`` ``float32`` clamped to ``[0, 1]``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.shape[-2:] != (resolution, resolution):
        image = np.stack([resize_plane(plane, (resolution, resolution)) for plane in image])
    return np.clip(image, 0.0, 1.0)


def resize_plane(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample one ``(H, W)`` plane to ``shape = (rows, cols)`` (antialiased bilinear, ``float32``).

    Also used to bring a model-sized ``(R, R)`` anomaly map back to an image's own size.
    """
    rows, cols = shape
    source = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode "F"
    return np.asarray(source.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)


def resize_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
    """Resize an ``(H, W)`` boolean mask to ``(1, R, R)`` by the any-pixel rule (see module docstring).

    Returns:
        ``(1, resolution, resolution)`` ``float32`` with values in ``{0, 1}``.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.stack([mask[a:b].any(axis=0) for a, b in _pool_bins(mask.shape[0], resolution)])
    cells = np.stack([rows[:, a:b].any(axis=1) for a, b in _pool_bins(mask.shape[1], resolution)], axis=1)
    return cells[None].astype(np.float32)


def _pool_bins(size: int, bins: int) -> list[tuple[int, int]]:
    """Source ranges ``[start, end)`` of adaptive pooling from ``size`` to ``bins`` cells."""
    return [((i * size) // bins, -((-(i + 1) * size) // bins)) for i in range(bins)]


def preprocess_image(image: np.ndarray, channels: int, resolution: int) -> np.ndarray:
    """A decoded image (``read_image`` output) as the model's input.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]``.
        channels: the task's input channels (1 or 3).
        resolution: output side ``R``.

    Returns:
        ``(channels, R, R)`` ``float32`` in ``[0, 1]``.
    """
    return resize_image(to_channels(image, channels), resolution)


def widen_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A preprocessed ``(c, R, R)`` image as a ``channels``-channel model's input ``(channels, R, R)``.

    A gray image (``c = 1``) for a colour model is replicated into its three channels (equal to the trunk's
    folded gray stem); an image that already has ``channels`` is returned as is.
    """
    return image if len(image) == channels else np.repeat(image, channels, axis=0)


def is_box_spec(spec: str) -> bool:
    """Whether a manifest ``mask`` value is a bounding-box specification."""
    return spec.startswith(BOX_PREFIX)


def rasterize_boxes(spec: str, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise ``box:x,y,w,h;...`` (image pixel coordinates) into an ``(H, W)`` boolean mask.

    Boxes are clipped to the image; a pixel is inside if its unit square overlaps a box.

    Raises:
        DatasetError: the specification is malformed or a box has no positive width/height.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for part in filter(None, (p.strip() for p in spec[len(BOX_PREFIX):].split(";"))):
        try:
            x, y, w, h = (float(v) for v in part.split(","))
        except ValueError:
            raise DatasetError(
                f"mask {spec!r}: box {part!r} is not 'x,y,w,h' (four numbers in image pixels)"
            ) from None
        if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
            raise DatasetError(f"mask {spec!r}: box {part!r} must be finite with a positive width and height")
        col0, col1 = max(0, math.floor(x)), min(width, math.ceil(x + w))
        row0, row1 = max(0, math.floor(y)), min(height, math.ceil(y + h))
        mask[row0:row1, col0:col1] = True
    return mask
