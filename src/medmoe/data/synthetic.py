"""Synthetic phantoms: anatomy-like images with lesions and their masks, for tests and the demo.

**These images are never real data.** They are drawn from simple analytic shapes and filtered
noise so that every part of medmoe (reading, training, scoring, reports) can be exercised end to
end without a download, in CI and in ``medmoe demo``. Manifests written here carry
``synthetic: true`` in their metadata.

Each of the five default tasks has its own anatomy, with natural variation among normal images
(size, position, rotation, intensity, texture and noise):

==============  ==========================================================  =========================================
task            normal anatomy                                              lesion (abnormal images; its mask)
==============  ==========================================================  =========================================
``chest_xray``  two dark lung fields, rib arcs, mediastinum, heart, spine   a fluffy opacity in one lung
``brain_mri``   scalp, skull ring, folded cortex, white matter, ventricles  a bright or dark mass with an edema ring
``fundus``      dark surround, bright retina, optic disc and cup, macula,   an enlarged cup (glaucoma) or dark
                vessel tree                                                 haemorrhage spots
``breast_us``   speckle, skin line, fat / glandular / muscle layers,        a hypoechoic mass with posterior shadow
                depth attenuation                                           or enhancement (mask: the mass)
``head_ct``     bright skull ring, gray brain, sulci, ventricles, falx      a hyperdense haemorrhage (intraparenchymal
                                                                            blob or crescent at the skull)
==============  ==========================================================  =========================================

Lesion size and contrast vary over a wide range (some are subtle), so a detector has to work for
them. An abnormal image is its normal twin plus a lesion: :func:`make_phantom` draws anatomy, lesion
and noise from three independent streams, so the same generator state with ``abnormal=False`` and
``abnormal=True`` gives images that differ only where the lesion was drawn.

Coordinates below are normalised: ``x`` to the right, ``y`` down, both in ``[-1, 1]`` over the image,
after a random similarity transform (rotation, scale, shift) of the whole anatomy.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medmoe.atomic import atomic_write_bytes
from medmoe.data.manifest import Manifest, Sample, write_manifest
from medmoe.data.splits import VAL_FRACTION, carve_validation, check_split_args
from medmoe.errors import ConfigError

Array = np.ndarray


@dataclass(frozen=True)
class _Canvas:
    """Pixel grid of one phantom in normalised, randomly transformed coordinates.

    Attributes:
        size: image side in pixels.
        x: (H, W) horizontal coordinate of each pixel in anatomy space.
        y: (H, W) vertical coordinate of each pixel in anatomy space.
        to_pixel: (2, 3) affine map from anatomy ``(x, y, 1)`` to continuous pixel ``(column, row)``.
    """

    size: int
    x: Array
    y: Array
    to_pixel: Array

    @classmethod
    def create(cls, size: int, rng: np.random.Generator, *, rotation_deg: float, shift: float,
               scale: tuple[float, float]) -> _Canvas:
        """A canvas whose anatomy is rotated by up to ``rotation_deg``, shifted by up to ``shift``
        (normalised units) and scaled by a factor drawn from ``scale``."""
        angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
        shift_xy = rng.uniform(-shift, shift, size=2)
        s = rng.uniform(*scale)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        # image q = s * rotation @ anatomy + shift, with q in [-1, 1]; pixel = (q + 1) * size / 2
        to_q = np.concatenate([s * rotation, shift_xy[:, None]], axis=1)
        to_pixel = to_q * (size / 2.0) + np.array([[0, 0, size / 2.0], [0, 0, size / 2.0]])
        q = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
        qy, qx = np.meshgrid(q, q, indexing="ij")
        inverse = rotation.T / s
        dx, dy = qx - shift_xy[0], qy - shift_xy[1]
        x = inverse[0, 0] * dx + inverse[0, 1] * dy
        y = inverse[1, 0] * dx + inverse[1, 1] * dy
        return cls(size, x.astype(np.float32), y.astype(np.float32), to_pixel)

    def radius(self, cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0) -> Array:
        """(H, W) normalised elliptical radius: < 1 inside the ellipse, 1 on its outline."""
        a = np.deg2rad(angle_deg)
        dx, dy = self.x - cx, self.y - cy
        u = np.cos(a) * dx + np.sin(a) * dy
        v = -np.sin(a) * dx + np.cos(a) * dy
        return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def _inside(r: Array, edge: float = 0.04) -> Array:
    """Soft indicator of ``r < 1``: 1 inside, 0 outside, a linear ramp of width ``edge``."""
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> Array:
    """(size, size) Gaussian-filtered white noise (filtered in Fourier space), zero mean, unit std."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    gain = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size))
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _angular_wobble(rng: np.random.Generator, theta: Array, harmonics: Sequence[int],
                    amplitude: float) -> Array:
    """A random periodic function of the angle ``theta``: sum of cosines with the given harmonics,
    each of amplitude up to ``amplitude / k``."""
    out = np.zeros_like(theta)
    for k in harmonics:
        out += rng.uniform(0.0, amplitude / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return out


def _lesion(canvas: _Canvas, rng: np.random.Generator, cx: float, cy: float, radius: float,
            *, elongation: float = 0.3, irregularity: float = 0.25, softness: float = 0.35
            ) -> tuple[Array, Array]:
    """An irregular blob: (H, W) intensity profile in [0, 1] (1 at its core, smooth towards the
    border) and its (H, W) bool mask (profile at least one half, the blob's half-maximum extent)."""
    aspect = 1.0 + rng.uniform(-elongation, elongation)
    r = canvas.radius(cx, cy, radius * aspect, radius / aspect, rng.uniform(0, 180))
    theta = np.arctan2(canvas.y - cy, canvas.x - cx)
    r_eff = r / (1.0 + _angular_wobble(rng, theta, (2, 3, 4, 5), irregularity))
    profile = np.clip((1.0 - r_eff) / softness + 0.5, 0.0, 1.0)
    return profile.astype(np.float32), profile >= 0.5


def _point_in(region: Array, canvas: _Canvas, rng: np.random.Generator) -> tuple[float, float]:
    """Anatomy coordinates of a random pixel of a boolean region."""
    ys, xs = np.nonzero(region)
    k = rng.integers(len(ys))
    return float(canvas.x[ys[k], xs[k]]), float(canvas.y[ys[k], xs[k]])


def _finish(img: Array, rng: np.random.Generator, noise: tuple[float, float]) -> Array:
    """Global intensity variation (gain, offset, gamma) and additive noise, clipped to [0, 1]."""
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    img = img * rng.uniform(0.9, 1.08) + rng.uniform(-0.03, 0.03)
    img = img + rng.normal(0.0, rng.uniform(*noise), img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# One function per task: (size, anatomy rng, lesion rng or None, noise rng) -> (image, mask)

Painter = Callable[[int, np.random.Generator, "np.random.Generator | None", np.random.Generator],
                   tuple[Array, Array]]


def _chest_xray(size: int, rng: np.random.Generator, lesion_rng: np.random.Generator | None,
                noise_rng: np.random.Generator) -> tuple[Array, Array]:
    """Frontal chest radiograph: air is dark, soft tissue gray, bone bright, lungs dark."""
    c = _Canvas.create(size, rng, rotation_deg=5, shift=0.05, scale=(0.92, 1.06))
    x, y = c.x, c.y
    half_width = rng.uniform(0.86, 0.95) * np.clip(0.3 + 1.3 * (y + 1.05), 0.3, 1.0)  # neck to shoulders
    body = _inside(np.abs(x) / half_width, 0.08)
    img = 0.05 + 0.50 * body
    dome = rng.uniform(0.36, 0.5)
    img = img + 0.08 * body * _inside((dome + 0.05 - y) / 0.1 + 1.0, 0.5)  # abdomen below the diaphragm
    lungs = np.zeros_like(x)
    for side in (-1.0, 1.0):
        cx = side * rng.uniform(0.36, 0.41)
        rx, ry = rng.uniform(0.27, 0.32), rng.uniform(0.62, 0.7)
        cy = dome - ry * 0.8
        v = (y - cy) / ry
        narrowing = 1.0 - 0.5 * np.clip(-v, 0.0, 1.0) ** 2  # lungs taper to the apex
        r = np.sqrt(((x - cx) / (rx * narrowing)) ** 2 + v**2)
        diaphragm = _inside((y - dome - side * 0.03 + 0.12 * ((x - cx) / rx) ** 2) / 0.04 + 1.0, 0.5)
        lungs = np.maximum(lungs, _inside(r, 0.06) * diaphragm)
    heart = _inside(c.radius(rng.uniform(0.1, 0.16), dome + 0.05, rng.uniform(0.28, 0.34), rng.uniform(0.34, 0.4),
                             -10), 0.08)
    mediastinum = _inside(np.abs(x) / rng.uniform(0.1, 0.13), 0.2) * _inside(-y / 0.9, 0.6)
    thorax = body * _inside((y - dome - 0.1) / 0.15 + 1.0, 0.5)
    soft = np.maximum(heart, mediastinum) * thorax
    lungs = lungs * (1.0 - soft)
    img = img + 0.05 * soft - lungs * (0.34 + 0.04 * _smooth_noise(rng, size, size / 40))
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * y / 0.13 + rng.uniform(0, 2 * np.pi))
    img = img + _inside(np.abs(x) / 0.06, 0.3) * body * (0.05 + 0.04 * vertebrae)
    rib_phase = (y + 0.15 * np.abs(x) - 0.9 * x**2) / rng.uniform(0.17, 0.21) + rng.uniform(0, 1)
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * rib_phase)) ** 8
    img = img + rng.uniform(0.09, 0.14) * ribs * thorax * (y > -0.85)
    clavicles = _inside(np.abs(y + 0.72 + 0.25 * np.abs(x) - 0.35 * x**2) / 0.035, 0.6)
    img = img + 0.12 * clavicles * body * _inside(np.abs(x) / 0.7, 0.1)
    mask = np.zeros((size, size), dtype=bool)
    if lesion_rng is not None:
        inside_lung = lungs > 0.9
        cx, cy = _point_in(inside_lung, c, lesion_rng)
        profile, mask = _lesion(c, lesion_rng, cx, cy, lesion_rng.uniform(0.12, 0.25), softness=0.4)
        fluff = 0.75 + 0.25 * _smooth_noise(lesion_rng, size, size / 60)
        profile, mask = profile * inside_lung, mask & inside_lung
        img = img + lesion_rng.uniform(0.45, 0.65) * profile * fluff  # dense consolidation, brighter than ribs
    return _finish(img, noise_rng, (0.008, 0.02)), mask


def _sulci(rng: np.random.Generator, size: int, band: Array) -> Array:
    """(H, W) soft indicator of a labyrinth of sulci inside ``band``: the zero crossings of
    band-limited noise, which meander like cortical folds."""
    field = _smooth_noise(rng, size, size / 45)
    return _inside(np.abs(field) / 0.2, 0.8) * band


def _ventricles(c: _Canvas, rng: np.random.Generator) -> Array:
    """(H, W) soft indicator of the lateral ventricles: frontal horns diverging towards the front
    (top) and smaller posterior parts."""
    out = np.zeros_like(c.x)
    for side in (-1.0, 1.0):
        frontal = c.radius(side * rng.uniform(0.06, 0.09), rng.uniform(-0.2, -0.12), rng.uniform(0.05, 0.075),
                           rng.uniform(0.15, 0.2), -side * rng.uniform(15, 30))
        posterior = c.radius(side * rng.uniform(0.1, 0.13), rng.uniform(0.16, 0.24), rng.uniform(0.025, 0.035),
                             rng.uniform(0.07, 0.1), side * rng.uniform(15, 30))
        out = np.maximum(out, np.maximum(_inside(frontal, 0.2), _inside(posterior, 0.25)))
    return out


def _falx(c: _Canvas) -> Array:
    """(H, W) soft indicator of the midline fissure in front of and behind the ventricles."""
    return _inside(np.abs(c.x) / 0.012, 0.8) * (np.abs(c.y) > 0.35)


def _brain_mri(size: int, rng: np.random.Generator, lesion_rng: np.random.Generator | None,
               noise_rng: np.random.Generator) -> tuple[Array, Array]:
    """Axial T1-like brain MRI slice: bright scalp fat, dark skull, folded cortex, dark CSF."""
    c = _Canvas.create(size, rng, rotation_deg=10, shift=0.06, scale=(0.88, 1.05))
    r = c.radius(0, 0, rng.uniform(0.68, 0.76), rng.uniform(0.84, 0.92))
    img = rng.uniform(0.6, 0.75) * _inside(r, 0.03)  # scalp
    img = img - rng.uniform(0.5, 0.6) * _inside(r / 0.94, 0.03)  # skull (dark in MRI)
    brain_r = r / rng.uniform(0.85, 0.88)
    brain = _inside(brain_r, 0.03)
    gm_level, wm_level = rng.uniform(0.40, 0.48), rng.uniform(0.62, 0.70)
    wm = _inside(brain_r / (0.74 + 0.05 * _smooth_noise(rng, size, size / 20)), 0.12)
    tissue = gm_level + (wm_level - gm_level) * wm
    tissue = tissue - 0.2 * np.maximum(_sulci(rng, size, _inside(0.7 / brain_r, 0.2)), _falx(c))
    tissue = tissue - 0.42 * _ventricles(c, rng) + 0.025 * _smooth_noise(rng, size, size / 30)
    img = img + brain * (tissue - img)
    mask = np.zeros((size, size), dtype=bool)
    if lesion_rng is not None:
        inside = brain_r < 0.72
        cx, cy = _point_in(inside, c, lesion_rng)
        radius = lesion_rng.uniform(0.11, 0.22)
        edema, edema_mask = _lesion(c, lesion_rng, cx, cy, radius * lesion_rng.uniform(1.3, 1.7), softness=1.0)
        mass, mass_mask = _lesion(c, lesion_rng, cx, cy, radius, softness=0.3)
        bright = lesion_rng.random() < 0.5
        target = lesion_rng.uniform(0.85, 1.0) if bright else lesion_rng.uniform(0.05, 0.2)
        img = img - lesion_rng.uniform(0.12, 0.22) * edema * brain
        img = img + mass * (target - img) * lesion_rng.uniform(0.8, 1.0)
        mask = (edema_mask | mass_mask) & (brain > 0.5)
    return _finish(img, noise_rng, (0.008, 0.025)), mask


def _vessel_tree(c: _Canvas, rng: np.random.Generator, start: tuple[float, float],
                 away: float) -> Array:
    """(H, W) vessel density in [0, 1]: four arcades from the optic disc, branching, drawn with
    Pillow at twice the resolution and box-filtered down (antialiased)."""
    scale = 2
    canvas = Image.new("L", (c.size * scale, c.size * scale), 0)
    draw = ImageDraw.Draw(canvas)

    def to_pixel(p: tuple[float, float]) -> tuple[float, float]:
        col, row = (c.to_pixel @ np.array([p[0], p[1], 1.0])) * scale
        return float(col), float(row)

    stack = [(start, away + s * rng.uniform(40, 60), s * rng.uniform(1.2, 2.0), 3.6)
             for s in (-1.0, 1.0)]
    stack += [(start, away + 180 + s * rng.uniform(30, 50), -s * rng.uniform(0.6, 1.2), 2.6)
              for s in (-1.0, 1.0)]
    while stack:
        point, heading, bend, width = stack.pop()
        for _ in range(rng.integers(8, 14)):
            heading += bend * rng.uniform(3, 9) + rng.normal(0, 5)
            step = 0.07
            nxt = (point[0] + step * np.cos(np.deg2rad(heading)), point[1] + step * np.sin(np.deg2rad(heading)))
            draw.line([to_pixel(point), to_pixel(nxt)], fill=255,
                      width=max(1, round(width * scale * c.size / 128)))
            point = nxt
            if width > 1.0 and rng.random() < 0.25:
                stack.append((point, heading + rng.choice([-1, 1]) * rng.uniform(25, 60), bend * 0.5, width * 0.6))
            if abs(point[0]) > 1.2 or abs(point[1]) > 1.2:
                break
            width = max(0.8, width * 0.93)
    small = canvas.resize((c.size, c.size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _fundus(size: int, rng: np.random.Generator, lesion_rng: np.random.Generator | None,
            noise_rng: np.random.Generator) -> tuple[Array, Array]:
    """Colour fundus photo in gray: dark surround, vignetted retina, bright disc and cup, vessels."""
    c = _Canvas.create(size, rng, rotation_deg=12, shift=0.03, scale=(0.95, 1.03))
    field = c.radius(0, 0, 0.93, 0.93)
    retina = _inside(field, 0.03)
    img = retina * (rng.uniform(0.42, 0.52) * (1.0 - 0.35 * field**2) + 0.025 * _smooth_noise(rng, size, size / 25))
    side = rng.choice([-1.0, 1.0])  # left or right eye
    dx, dy = side * rng.uniform(0.33, 0.42), rng.uniform(-0.06, 0.06)
    disc_r = rng.uniform(0.11, 0.14)
    macula = _inside(c.radius(dx - side * rng.uniform(0.45, 0.55), dy + 0.04, 0.2, 0.2), 1.2)
    img = img - rng.uniform(0.06, 0.12) * macula * retina
    vessels = _vessel_tree(c, rng, (dx, dy), 180.0 if side > 0 else 0.0)
    img = img - rng.uniform(0.14, 0.2) * vessels * retina
    disc = _inside(c.radius(dx, dy, disc_r, disc_r * 1.08), 0.25)
    img = img + rng.uniform(0.28, 0.36) * disc
    cup_ratio = rng.uniform(0.25, 0.42)
    glaucoma = lesion_rng is not None and lesion_rng.random() < 0.5
    if glaucoma and lesion_rng is not None:  # the lesion is an enlarged cup
        cup_ratio = lesion_rng.uniform(0.6, 0.85)
    cup = _inside(c.radius(dx + side * 0.01, dy, disc_r * cup_ratio, disc_r * cup_ratio * 1.1), 0.2)
    img = img + rng.uniform(0.15, 0.22) * cup
    mask = cup >= 0.5 if glaucoma else np.zeros((size, size), dtype=bool)
    if lesion_rng is not None and not glaucoma:  # dark haemorrhage spots in the retina
        inside = field < 0.8
        for _ in range(lesion_rng.integers(1, 5)):
            cx, cy = _point_in(inside, c, lesion_rng)
            profile, spot = _lesion(c, lesion_rng, cx, cy, lesion_rng.uniform(0.05, 0.1),
                                    elongation=0.6, softness=0.6)
            img = img - lesion_rng.uniform(0.2, 0.35) * profile
            mask |= spot
    return _finish(img * retina, noise_rng, (0.005, 0.015)) * (retina > 0.02), mask


def _speckle(rng: np.random.Generator, size: int) -> Array:
    """(H, W) fully developed speckle: magnitude of filtered complex Gaussian noise, mean 1."""
    re, im = _smooth_noise(rng, size, 1.3), _smooth_noise(rng, size, 1.3)
    amplitude = np.sqrt(re**2 + im**2)
    return amplitude / amplitude.mean()


def _breast_us(size: int, rng: np.random.Generator, lesion_rng: np.random.Generator | None,
               noise_rng: np.random.Generator) -> tuple[Array, Array]:
    """B-mode breast ultrasound: skin line, fat, glandular and muscle layers, speckle, attenuation."""
    c = _Canvas.create(size, rng, rotation_deg=3, shift=0.02, scale=(0.95, 1.05))
    x, y = c.x, c.y

    def boundary(base: float, amp: float) -> Array:
        wobble = sum(rng.uniform(0, amp / k) * np.sin(k * np.pi * x + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3, 5))
        return base + wobble

    fat_end = boundary(rng.uniform(-0.55, -0.35), 0.15)
    gland_end = boundary(rng.uniform(0.15, 0.35), 0.2)
    muscle_start = boundary(rng.uniform(0.45, 0.6), 0.08)
    echo = np.full_like(x, 0.35)
    lobules = _smooth_noise(rng, size, size / 14)
    echo = np.where(y < fat_end, 0.22 + 0.06 * lobules, echo)
    glands = 0.55 + 0.12 * _smooth_noise(rng, size, size / 20)
    echo = np.where((y >= fat_end) & (y < gland_end), glands, echo)
    echo = np.where((y >= gland_end) & (y < muscle_start), 0.2, echo)
    fibres = 0.5 + 0.5 * np.cos(2 * np.pi * (y - 0.15 * x) / 0.07)
    echo = np.where(y >= muscle_start, 0.25 + 0.2 * fibres, echo)
    for level in (fat_end, gland_end, muscle_start):
        echo = echo + 0.25 * _inside(np.abs(y - level) / 0.02, 1.0)
    echo = echo + 0.55 * _inside(np.abs(y + 0.9) / 0.025, 1.0)  # skin line
    echo = echo * np.exp(-rng.uniform(0.15, 0.4) * (y + 1.0))  # depth attenuation
    columns = np.ones_like(x)
    for _ in range(rng.integers(1, 4)):  # thin shadows of Cooper's ligaments
        columns = columns * (1.0 - 0.12 * _inside(np.abs(x - rng.uniform(-0.8, 0.8)) / 0.02, 1.0)
                             * (y > fat_end))
    mask = np.zeros((size, size), dtype=bool)
    if lesion_rng is not None:
        gland = (y > fat_end + 0.05) & (y < gland_end - 0.05) & (np.abs(x) < 0.75)
        cx, cy = _point_in(gland, c, lesion_rng)
        radius = lesion_rng.uniform(0.08, 0.22)
        profile, mask = _lesion(c, lesion_rng, cx, cy, radius, elongation=0.5,
                                irregularity=lesion_rng.uniform(0.05, 0.5), softness=0.25)
        echo = echo + profile * (lesion_rng.uniform(0.04, 0.14) - echo)
        below = _inside(np.abs(x - cx) / (radius * 0.9), 0.4) * _inside((cy + radius * 0.5 - y) / 0.1 + 1.0, 0.5)
        posterior = lesion_rng.uniform(0.35, 0.7) if lesion_rng.random() < 0.6 else -lesion_rng.uniform(0.15, 0.35)
        columns = columns * (1.0 - posterior * below * (1.0 - profile))
    img = echo * columns * (0.4 + 0.6 * _speckle(rng, size))
    return _finish(img, noise_rng, (0.005, 0.015)), mask


def _head_ct(size: int, rng: np.random.Generator, lesion_rng: np.random.Generator | None,
             noise_rng: np.random.Generator) -> tuple[Array, Array]:
    """Axial head CT in a brain window: bright skull, gray brain, dark CSF."""
    c = _Canvas.create(size, rng, rotation_deg=10, shift=0.05, scale=(0.85, 1.05))
    r = c.radius(0, 0, rng.uniform(0.66, 0.74), rng.uniform(0.82, 0.9))
    theta = np.arctan2(c.y, c.x)
    thickness = rng.uniform(0.06, 0.09) * (1.0 + 0.3 * _angular_wobble(rng, theta, (1, 2, 3), 1.0))
    head = _inside(r, 0.03)
    inner_r = r / (1.0 - thickness)
    brain = _inside(inner_r, 0.03)
    img = 0.30 * head + (rng.uniform(0.88, 0.98) - 0.30) * (head - brain)  # scalp, then skull
    tissue = rng.uniform(0.38, 0.44) - 0.04 * _inside(
        inner_r / (0.75 + 0.05 * _smooth_noise(rng, size, size / 20)), 0.2)
    tissue = tissue - 0.12 * _sulci(rng, size, _inside(0.8 / inner_r, 0.2))
    tissue = tissue - 0.2 * _ventricles(c, rng) + 0.12 * _falx(c) + 0.015 * _smooth_noise(rng, size, size / 30)
    img = img + brain * (tissue - img)
    mask = np.zeros((size, size), dtype=bool)
    if lesion_rng is not None:
        density = lesion_rng.uniform(0.52, 0.82)
        if lesion_rng.random() < 0.7:  # intraparenchymal haemorrhage
            cx, cy = _point_in(inner_r < 0.7, c, lesion_rng)
            profile, mask = _lesion(c, lesion_rng, cx, cy, lesion_rng.uniform(0.06, 0.2), softness=0.25)
        else:  # subdural crescent along the inner table
            centre = lesion_rng.uniform(-np.pi, np.pi)
            arc = np.cos(theta - centre) > np.cos(lesion_rng.uniform(0.4, 0.9))
            depth = lesion_rng.uniform(0.05, 0.1) * np.clip((np.cos(theta - centre) - 0.6) / 0.4, 0, 1)
            profile = (arc & (inner_r < 1.0) & (inner_r > 1.0 - depth)).astype(np.float32)
            mask = profile > 0.5
        profile, mask = profile * brain, mask & (brain > 0.5)
        img = img + profile * (density - img)
    return _finish(img, noise_rng, (0.005, 0.02)), mask


PHANTOMS: dict[str, Painter] = {
    "chest_xray": _chest_xray,
    "brain_mri": _brain_mri,
    "fundus": _fundus,
    "breast_us": _breast_us,
    "head_ct": _head_ct,
}
"""The phantom painter of each task id; the five default tasks."""


def make_phantom(task_id: str, rng: np.random.Generator, size: int = 128,
                 abnormal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image of a task (never real data).

    Three seeds are drawn from ``rng`` (anatomy, lesion, noise), so the same generator state gives
    the same anatomy and noise whether ``abnormal`` is true or not: the abnormal image is the normal
    one plus a lesion.

    Args:
        task_id: one of :data:`PHANTOMS` (``chest_xray``, ``brain_mri``, ``fundus``, ``breast_us``,
            ``head_ct``).
        rng: the random generator; advanced by three draws.
        size: image side in pixels (at least 32).
        abnormal: draw a lesion.

    Returns:
        ``(image, mask)``: image (H, W) float32 in [0, 1]; mask (H, W) bool, the lesion's pixels
        (all false for a normal image).
    """
    if task_id not in PHANTOMS:
        raise ConfigError(f"no synthetic phantom for task {task_id!r}; available: {', '.join(PHANTOMS)}")
    if size < 32:
        raise ConfigError(f"phantom size must be at least 32 pixels, not {size}")
    anatomy_seed, lesion_seed, noise_seed = rng.integers(0, 2**63, size=3)
    image, mask = PHANTOMS[task_id](
        size,
        np.random.default_rng(anatomy_seed),
        np.random.default_rng(lesion_seed) if abnormal else None,
        np.random.default_rng(noise_seed),
    )
    return image, mask


def _png_bytes(array: np.ndarray) -> bytes:
    """8-bit gray PNG of an (H, W) array in [0, 1] (or bool)."""
    pixels = np.round(np.asarray(array, dtype=np.float32) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_synthetic_dataset(root: str | Path, *, n_train: int = 40, n_test_normal: int = 10,
                            n_test_abnormal: int = 10, size: int = 128, seed: int = 0,
                            tasks: Sequence[str] = tuple(PHANTOMS), val_fraction: float = VAL_FRACTION
                            ) -> Manifest:
    """Write a synthetic dataset (never real data) and its manifest.

    Layout: each ``ROOT/<task>`` is in the generic folder layout (:mod:`medmoe.data.sources.folder`,
    so ``medmoe prepare`` reads it too), the mask having its image's relative path under ``masks/``::

        ROOT/<task>/train/normal/<task>_train_0000.png
        ROOT/<task>/test/normal/<task>_test_normal_0000.png
        ROOT/<task>/test/abnormal/<task>_test_abnormal_0000.png
        ROOT/<task>/masks/<task>_test_abnormal_0000.png      (0/255, one per abnormal image)
        ROOT/manifest.csv                                     (all tasks, paths relative to ROOT)

    Images are 8-bit gray PNGs. Every image has its own seed derived from ``(seed, task, split,
    label, index)``, so an image does not change when the counts or the task list change. A seeded
    ``val_fraction`` of each task's training normals is marked ``val`` in the manifest
    (:func:`medmoe.data.splits.carve_validation`; the files stay in ``train/normal``). Every file,
    the manifest last, is written atomically.

    Args:
        root: output folder (created).
        n_train: normal training images per task (before the validation carve).
        n_test_normal: normal test images per task.
        n_test_abnormal: abnormal test images per task, each with a mask.
        size: image side in pixels.
        seed: the dataset seed (non-negative).
        tasks: task ids, a subset of :data:`PHANTOMS`.
        val_fraction: share of training normals moved to ``val``, in ``[0, 1)``.

    Returns:
        The manifest (also written to ``ROOT/manifest.csv``), with ``meta["synthetic"] == "true"``.
    """
    root = Path(root)
    check_split_args(seed, val_fraction)
    unknown = [t for t in tasks if t not in PHANTOMS]
    if unknown:
        raise ConfigError(f"no synthetic phantom for task(s) {unknown}; available: {', '.join(PHANTOMS)}")
    groups = (("train", 0, n_train, "train/normal", "train"),
              ("test", 0, n_test_normal, "test/normal", "test_normal"),
              ("test", 1, n_test_abnormal, "test/abnormal", "test_abnormal"))
    samples: list[Sample] = []
    for task in tasks:
        for group_id, (split, label, count, folder, stem) in enumerate(groups):
            for i in range(count):
                rng = np.random.default_rng([seed, zlib.crc32(task.encode("utf-8")), group_id, i])
                image, mask = make_phantom(task, rng, size=size, abnormal=bool(label))
                name = f"{task}_{stem}_{i:04d}.png"
                atomic_write_bytes(root / task / folder / name, _png_bytes(image))
                if label:
                    atomic_write_bytes(root / task / "masks" / name, _png_bytes(mask))
                samples.append(Sample(path=f"{task}/{folder}/{name}", task=task, label=label, split=split,
                                      subclass="abnormal" if label else "normal",
                                      mask=f"{task}/masks/{name}" if label else ""))
    manifest = carve_validation(Manifest(root=root.resolve(), samples=samples), val_fraction, seed)
    manifest.meta = {
        "synthetic": "true",
        "source": "medmoe.data.synthetic (generated phantoms, never real data)",
        "seed": str(seed),
        "size": str(size),
        "val_fraction": f"{val_fraction:g}",
    }
    write_manifest(manifest, root / "manifest.csv")
    return manifest
