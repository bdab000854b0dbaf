"""Overlay PNGs: an anomaly map as a heatmap over the gray original, with a colour bar and a title.

**Colour scale.** Colours are absolute anomaly-map values (the per-pixel ``(x − x̂)²·exp(−u²)``
whose mean is the image score), from 0 to ``max(HEADROOM · threshold, map maximum)``:

- maps that stay below ``HEADROOM`` (4) times the task's threshold are all drawn on the same scale,
  so colours are comparable between images of a task, and a normal image's map is not stretched to
  look alarming (on the demo model, normal maps peak at 3–12 × the threshold);
- a map that goes higher stretches the scale to its own maximum: no value is clipped.

Without a threshold the scale is ``0 … map maximum`` (per image; the colour bar says so). The
colour bar always shows the numbers.

**What is tinted.** The heatmap does not cover the whole image: it is clear where the map is below
:data:`FADE_FROM` of the threshold, fades in up to the threshold and is :data:`ALPHA` opaque above it, where a white
contour outlines the region (without a threshold: the image's hottest 10 %), so the anatomy stays
readable and the eye goes to what is above the threshold. Rendering uses matplotlib's object API with the Agg canvas
(no pyplot global state), so it is safe in a web server's worker threads.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from medmoe.api.results import DetectionResult
from medmoe.atomic import atomic_write_bytes
from medmoe.data.transforms import resize_plane

HEADROOM = 4.0
"""The colour scale reaches at least this multiple of the threshold (see the module docstring)."""

ALPHA = 0.5
"""Opacity of the heatmap where it is at or above the threshold (it fades out below, see the module docstring)."""

FADE_FROM = 0.8
"""The tint fades in from this share of the threshold: a feature model's map sits near 1 (its temperature) on
normal anatomy, so a lower start would haze the whole image."""

HOT_QUANTILE = 0.9
"""Without a threshold, the outline and fade are drawn at this quantile of the image's own map."""

CMAP = "jet"
"""Colour map of the heatmap."""

WIDTH_INCHES = 6.0
"""Drawn width of the image."""
PNG_COMPRESSION = 1
"""zlib level of overlay PNGs: 1 encodes in half the time of the default 6 for ~10 % larger files."""
MARGIN = 0.1
BAR_SPACE = 1.0
TITLE_SPACE = 0.5
"""Figure layout around the image, in inches: margin, colour bar with its labels, two title lines."""


def overlay_png(image: np.ndarray, anomaly_map: np.ndarray, *, title: str, threshold: float | None = None,
                dpi: int = 100) -> bytes:
    """Render the heatmap of ``anomaly_map`` over ``image`` as PNG bytes.

    Args:
        image: ``(H, W)`` gray or ``(H, W, 3)`` colour in ``[0, 1]`` (drawn as it is: a fundus photo stays
            in colour).
        anomaly_map: ``(H, W)`` non-negative, same size as ``image``.
        title: the figure title (e.g. from :func:`result_title`).
        threshold: the task's score threshold; sets the colour scale (module docstring). ``None``
            or ``nan``: scale to the map's maximum.
        dpi: resolution; the image is drawn :data:`WIDTH_INCHES` wide.

    Returns:
        The PNG file's bytes.
    """
    if image.shape[:2] != anomaly_map.shape or anomaly_map.ndim != 2 or image.ndim not in (2, 3):
        raise ValueError(f"image {image.shape} and anomaly map {anomaly_map.shape} must be the same (H, W)")
    return draw_overlay(*display_inputs(image, anomaly_map, threshold, dpi), title=title, threshold=threshold,
                        dpi=dpi)


def display_inputs(image: np.ndarray, anomaly_map: np.ndarray, threshold: float | None,
                   dpi: int = 100) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """What :func:`draw_overlay` needs, small: the image and map shrunk to display size, the colour
    scale's top (from the full-resolution map) and the original ``(H, W)`` — cheap to send to a
    worker process."""
    peak = float(np.max(anomaly_map)) if anomaly_map.size else 0.0  # of the full-resolution map
    per_image = threshold is None or math.isnan(threshold)
    vmax = max(peak if threshold is None or per_image else max(HEADROOM * threshold, peak), 1e-12)
    return _display_size(image, dpi), _display_size(anomaly_map, dpi), vmax, image.shape[:2]


def draw_overlay(image: np.ndarray, anomaly_map: np.ndarray, vmax: float, shape: tuple[int, int], *, title: str,
                 threshold: float | None, dpi: int = 100) -> bytes:
    """The PNG of :func:`overlay_png` from :func:`display_inputs`' output."""
    per_image = threshold is None or math.isnan(threshold)
    height, width = shape
    # a fixed layout (inches): no "tight" bounding box, which draws the figure twice
    drawn_height = WIDTH_INCHES * height / width
    fig_width, fig_height = MARGIN + WIDTH_INCHES + BAR_SPACE, MARGIN + drawn_height + TITLE_SPACE
    figure = Figure(figsize=(fig_width, fig_height), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((MARGIN / fig_width, MARGIN / fig_height,
                            WIDTH_INCHES / fig_width, drawn_height / fig_height))
    axes.imshow(np.clip(image, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
    norm = Normalize(0.0, vmax)
    level = float(np.quantile(anomaly_map, HOT_QUANTILE)) if per_image else float(threshold)  # type: ignore[arg-type]
    heat = colormaps[CMAP](norm(anomaly_map))
    ramp = (anomaly_map / max(level, 1e-12) - FADE_FROM) / (1.0 - FADE_FROM)
    heat[..., 3] = ALPHA * np.clip(ramp, 0.0, 1.0)  # clear below FADE_FROM of the level, opaque above it
    axes.imshow(heat, interpolation="antialiased")
    if float(anomaly_map.max()) > level > float(anomaly_map.min()):
        axes.contour(anomaly_map, levels=[level], colors="white", linewidths=1.0)
    axes.set_axis_off()
    axes.set_title(title, fontsize=9)
    bar_axes = figure.add_axes(((MARGIN + WIDTH_INCHES + 0.08) / fig_width, MARGIN / fig_height,
                                0.22 / fig_width, drawn_height / fig_height))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=bar_axes)
    label = "anomaly map per pixel"
    if per_image:
        label += " (scaled to this image's maximum; outlined: its hottest 10 %)"
    else:
        bar.ax.axhline(level, color="white", linewidth=2.0)
        label += " (white: the score threshold; outlined above it)"
    bar.set_label(label, fontsize=8 if drawn_height >= 4 else 6)
    bar.ax.tick_params(labelsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})
    return buffer.getvalue()


def _display_size(plane: np.ndarray, dpi: int) -> np.ndarray:
    """``plane`` (``(H, W)`` or ``(H, W, 3)``) shrunk (antialiased) to at most twice the drawn width in
    pixels: what is drawn is unchanged, and large radiographs render in a fraction of the time."""
    limit = int(2 * WIDTH_INCHES * dpi)
    height, width = plane.shape[:2]
    if width <= limit:
        return plane
    shape = (max(1, round(height * limit / width)), limit)
    if plane.ndim == 3:
        return np.stack([resize_plane(plane[..., c], shape) for c in range(plane.shape[2])], axis=-1)
    return resize_plane(plane, shape)


def result_title(result: DetectionResult) -> str:
    """``<file> · <task> · score 0.123 > threshold 0.100 → ANOMALOUS`` (two lines for long names)."""
    name = Path(result.source).name if result.source else "image"
    if math.isnan(result.threshold):
        verdict = f"score {result.score:.4g}, no threshold → UNDETERMINED"
    else:
        sign = ">" if result.above_threshold else "≤"
        p = "" if math.isnan(result.p_value) else f" (p = {result.p_value:.2g})"
        verdict = (f"score {result.score:.4g} {sign} threshold {result.threshold:.4g}{p} → "
                   f"{result.decision.upper().replace('_', ' ')}")
    caveat = " · OUT OF SCOPE" if result.out_of_scope else " · prompt mismatch" if result.prompt_mismatch else ""
    return f"{name} · {result.task}{caveat}\n{verdict}"


def render_result(result: DetectionResult, dpi: int = 100) -> bytes:
    """The overlay PNG of a :class:`DetectionResult` (its anomaly map, threshold and title)."""
    return overlay_png(result.image, result.anomaly_map, title=result_title(result),
                       threshold=result.threshold, dpi=dpi)


def write_overlay(path: Path, inputs: tuple[np.ndarray, np.ndarray, float, tuple[int, int]], title: str,
                  threshold: float | None) -> None:
    """Draw :func:`display_inputs`' output and write the PNG to ``path`` atomically (a worker's job)."""
    atomic_write_bytes(path, draw_overlay(*inputs, title=title, threshold=threshold))
