"""Synthetic anomalies made from normal images, for design choices on validation data.

Validation splits hold normals only; a design decision (trunk stages, error, score) still needs
positives. These are made from the validation normals themselves, never from test images, so choosing
on them leaves the test split untouched. Two kinds, half each (seeded):

- **blob**: a smooth elliptical region brightened or darkened (a mass, a bleed, a consolidation);
- **patch**: a region replaced by the same-shaped region of another normal image of the same task,
  elsewhere (CutPaste-style: normal texture in the wrong place), with a soft edge.

Both cover 1–6 % of the image by default.
"""

from __future__ import annotations

import numpy as np


def _ellipse(size: int, rng: np.random.Generator, area: tuple[float, float]) -> np.ndarray:
    """A soft elliptical weight map ``(size, size)`` in [0, 1] covering about ``area`` of the image."""
    frac = rng.uniform(*area)
    ratio = rng.uniform(0.5, 2.0)
    ry = np.sqrt(frac / np.pi / ratio) * size
    rx = ry * ratio
    cy, cx = rng.uniform(0.25, 0.75, size=2) * size
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    a = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
    b = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
    r = np.sqrt(a**2 + b**2)
    return np.clip((1.2 - r) / 0.4, 0.0, 1.0)


def synthesize_anomalies(images: np.ndarray, rng: np.random.Generator, *,
                         area: tuple[float, float] = (0.01, 0.06)) -> tuple[np.ndarray, np.ndarray]:
    """Anomalous copies of normal images of one task, and their lesion masks.

    Args:
        images: ``(n, C, R, R)`` normals in [0, 1] (n ≥ 2 for the patch kind).
        rng: the generator (seed it for reproducible validation sets).
        area: range of the lesion's share of the image.

    Returns:
        ``(images (n, C, R, R), masks (n, 1, R, R) bool)``; image ``i`` is a modified copy of ``images[i]``.
    """
    n, _, size, _ = images.shape
    out = images.astype(np.float32).copy()
    masks = np.zeros((n, 1, size, size), dtype=bool)
    for i in range(n):
        weight = _ellipse(size, rng, area)[None]
        if n > 1 and rng.random() < 0.5:
            donor = images[(i + rng.integers(1, n)) % n].astype(np.float32)
            shift = rng.integers(size // 8, size // 3, size=2) * rng.choice([-1, 1], size=2)
            source = np.roll(donor, tuple(int(s) for s in shift), axis=(1, 2))
            out[i] = out[i] * (1 - weight) + source * weight
        else:
            mean = float(out[i].mean())
            delta = rng.uniform(0.25, 0.5) * (1 if rng.random() < 0.5 or mean < 0.3 else -1)
            out[i] = np.clip(out[i] + delta * weight, 0.0, 1.0)
        masks[i, 0] = weight[0] > 0.5
    return out, masks
