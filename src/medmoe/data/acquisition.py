"""Copies of normal images under the changes another scanner or site makes, for the scope head.

A scan from another machine, protocol or hospital is still a scan of the same task: its intensities
follow another curve (gamma), contrast and offset; it is sharper or smoother and noisier; the body
sits larger or smaller and elsewhere in the frame. A scope that flags such a scan as "resembles no
trained task" is wrong. These copies are made from normal images only (training normals for the
scope's references, validation normals for the measurement, with other seeds): each copy gets one
random draw of every chosen kind of change (:data:`ACQUISITION_KINDS`).

The ranges are those of common acquisition differences, not of augmentation for its own sake:
gamma 0.67–1.5, contrast 0.75–1.25 about the image mean, offset ±0.05, Gaussian blur σ 0–1 px,
noise σ 0–0.02, zoom 0.9–1.1 and shift ±5 % of the side (border replicated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ACQUISITION_KINDS = ("gamma", "contrast", "offset", "blur", "noise", "geometry")
"""Kinds of acquisition change :func:`acquisition_shift` can apply."""


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, R, R)`` with standard deviation ``sigma`` px (reflect padding)."""
    if sigma < 1e-3:
        return image
    radius = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    h = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    h = F.conv2d(h, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    h = F.conv2d(h, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return h[0]


def acquisition_shift(images: np.ndarray, rng: np.random.Generator,
                      kinds: Sequence[str] = ACQUISITION_KINDS) -> np.ndarray:
    """A copy of every image ``(n, C, R, R)`` in [0, 1] under one random draw of each of ``kinds``
    (see the module docstring), clipped to [0, 1]; ``(n, C, R, R)`` float32."""
    unknown = set(kinds) - set(ACQUISITION_KINDS)
    if unknown:
        raise ValueError(f"unknown acquisition changes {sorted(unknown)}; expected some of {ACQUISITION_KINDS}")
    n = len(images)
    out = torch.from_numpy(np.asarray(images, dtype=np.float32).copy())
    if "geometry" in kinds and n:
        zoom, shift = rng.uniform(0.9, 1.1, n), rng.uniform(-0.05, 0.05, (n, 2))
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = torch.from_numpy(1.0 / zoom).float()
        theta[:, :, 2] = torch.from_numpy(2 * shift).float()
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, padding_mode="border", align_corners=False)
    for i in range(n):
        image = out[i].clamp(0, 1)
        if "gamma" in kinds:
            image = image ** float(np.exp(rng.uniform(np.log(1 / 1.5), np.log(1.5))))
        if "contrast" in kinds:
            image = (image - image.mean()) * rng.uniform(0.75, 1.25) + image.mean()
        if "offset" in kinds:
            image = image + rng.uniform(-0.05, 0.05)
        if "blur" in kinds:
            image = _blur(image, rng.uniform(0.0, 1.0))
        if "noise" in kinds:
            image = image + torch.from_numpy(rng.normal(0.0, rng.uniform(0.0, 0.02), image.shape)).float()
        out[i] = image.clamp(0, 1)
    return out.numpy()
