"""DICOM files, read with pydicom.

Grayscale pipeline (see :func:`read_dicom`), with pydicom's own functions at each step:

1. decode the stored values of one frame (``pydicom.pixels.pixel_array``);
2. Modality LUT: Rescale Slope/Intercept or Modality LUT Sequence (``apply_modality_lut``) —
   CT values are then in HU;
3. intensity to ``[0, 1]``:

   - ``window=`` given (``(center, width)`` or a preset name): that window, clinical convention
     (:func:`medmoe.io.intensity.apply_window`);
   - else the file's VOI LUT Sequence or Window Center/Width, first of several
     (``apply_voi_lut``), its output range mapped to ``[0, 1]``;
   - else min-max scaling;

4. ``MONOCHROME1`` (bright = low values, e.g. many CR radiographs) is inverted, so bone is
   always bright.

Enhanced multi-frame files keep rescale and window in functional groups; those of the chosen frame
are used. Colour: ``RGB``, ``YBR_*`` (converted to RGB by pydicom's decoder with
``convert_color_space``) and ``PALETTE COLOR`` (``apply_color_lut``) are scaled by their bit depth.
Compressed transfer syntaxes are decoded by whatever pydicom decoder plugin is installed; Pillow
covers JPEG baseline/extended and JPEG 2000, pydicom itself RLE. JPEG Lossless and JPEG-LS need an
extra package (``pylibjpeg-libjpeg`` — GPL-3.0, hence not a medmoe dependency — or
``python-gdcm``; ``pyjpegls``), and the error says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medmoe.errors import ImageReadError
from medmoe.io.choice import Choice, choose_index
from medmoe.io.intensity import apply_window, scale_min_max, scale_to_range
from medmoe.io.policy import NoFiniteValues, check_decoded_size

#: Tags :func:`read_dicom_tags` returns (descriptive only; no patient identifiers).
DESCRIPTIVE_TAGS: tuple[str, ...] = (
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "PhotometricInterpretation",
)

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FUNCTIONAL_GROUP_MODULES = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def read_dicom_tags(path: str | Path) -> dict[str, str]:
    """The descriptive tags of a DICOM file, used to suggest a task.

    Args:
        path: the DICOM file (pixel data is not read).

    Returns:
        ``{keyword: value}`` for every keyword in :data:`DESCRIPTIVE_TAGS` (at least ``Modality``
        and ``BodyPartExamined``), values as stripped strings, ``''`` where absent.

    Raises:
        ImageReadError: the file is missing or not DICOM.
    """
    dataset = read_dicom_header(path)
    return {keyword: str(dataset.get(keyword, "") or "").strip() for keyword in DESCRIPTIVE_TAGS}


def read_dicom_header(path: str | Path) -> Dataset:
    """The DICOM file's dataset without its pixel data (what result objects need of their source).

    Raises:
        ImageReadError: the file is missing or not DICOM.
    """
    with _quiet_pydicom():
        return _read_dataset(path, stop_before_pixels=True)


def read_dicom(
    path: str | Path,
    *,
    frame: Choice = None,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Read one frame of a DICOM image (see the module docstring for the intensity pipeline).

    Args:
        path: the DICOM file.
        frame: frame of a multi-frame file (an index, or first/middle/last: :mod:`medmoe.io.choice`);
            required for those, ignored for single-frame files.
        window: ``(center, width)`` in modality units (HU for CT) overriding the file's VOI;
            grayscale images only.

    Returns:
        ``float32`` in ``[0, 1]``: ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour.

    Raises:
        ImageReadError: not DICOM, no pixel data, no decoder for its compression, a bad ``frame``,
            a window on a colour image, or pixel data that does not decode.
    """
    with _quiet_pydicom():
        return _read_pixels(path, frame, window)


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings about non-conforming values (they interleave with progress bars; a
    value that matters fails with its own message)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        yield


def _read_pixels(path: str | Path, frame: Choice, window: tuple[float, float] | None) -> np.ndarray:
    """:func:`read_dicom`'s body."""
    dataset = _read_dataset(path, stop_before_pixels=False)
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        if getattr(dataset, "preamble", None) is None:
            raise ImageReadError(path, "it has neither the DICOM 'DICM' preamble nor pixel data: not a DICOM image")
        raise ImageReadError(
            path,
            "the DICOM file has no pixel data (a structured report, presentation state or "
            "truncated file?); pass an image DICOM",
        )
    index = _frame_index(dataset, path, frame)
    _check_decoded_size(dataset, path)
    _check_decoder(dataset, path)
    try:
        stored = pixel_array(dataset, index=index)
    except Exception as exc:  # decoder plugins raise many types; all mean "cannot decode this file"
        raise ImageReadError(path, f"its pixel data could not be decoded ({type(exc).__name__}: {exc})") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        stored = apply_color_lut(stored, dataset)
    if stored.ndim == 3:
        if window is not None:
            raise ImageReadError(path, f"window= applies to grayscale images; this one is {photometric}")
        return _scale_colour(stored, dataset, palette=photometric == "PALETTE COLOR")
    _lift_functional_groups(dataset, index)
    return _grayscale_to_unit(stored, dataset, path, window, invert=photometric == "MONOCHROME1")


def _read_dataset(path: str | Path, *, stop_before_pixels: bool) -> Dataset:
    """Parse the file; files without the 128-byte preamble are read with ``force=True``."""
    try:
        try:
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            dataset = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(path, f"it is not a readable DICOM file ({exc})") from exc
    _infer_transfer_syntax(dataset)
    return dataset


def _infer_transfer_syntax(dataset: Dataset) -> None:
    """Give a file without File Meta Information the (uncompressed) syntax it was parsed with.

    Old files written without the Part 10 header (no preamble, no Transfer Syntax UID) can only be
    uncompressed; pydicom needs the syntax to decode their pixel data. Modifies ``dataset``.
    """
    if "TransferSyntaxUID" in dataset.file_meta or dataset.original_encoding[0] is None:
        return
    implicit_vr, little_endian = dataset.original_encoding
    if implicit_vr:
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def count_dicom_frames(path: str | Path) -> int:
    """How many frames a DICOM file has, from (0028,0008) Number of Frames (pixel data is not read).

    Raises:
        ImageReadError: not DICOM, or a corrupt Number of Frames.
    """
    with _quiet_pydicom():
        return _frame_count(_read_dataset(path, stop_before_pixels=True), path)


def _frame_index(dataset: Dataset, path: str | Path, frame: Choice) -> int:
    """The frame ``frame`` picks (:mod:`medmoe.io.choice`) by (0028,0008) Number of Frames."""
    return choose_index(_frame_count(dataset, path), frame, path, unit="frame", flag="--frame", keyword="frame")


def _frame_count(dataset: Dataset, path: str | Path) -> int:
    """(0028,0008) Number of Frames, 1 when absent."""
    raw = dataset.get("NumberOfFrames", 1)
    try:
        n_frames = int(raw or 1)
    except (TypeError, ValueError):
        raise ImageReadError(path, f"its Number of Frames (0028,0008) is {str(raw)!r}, not a number: the header "
                                   "is corrupt; re-export the file") from None
    if n_frames < 1:
        raise ImageReadError(path, f"its Number of Frames (0028,0008) is {n_frames}; re-export the file")
    return n_frames


def _check_decoded_size(dataset: Dataset, path: str | Path) -> None:
    """The input policy's size limits from (0028,0010) Rows and (0028,0011) Columns, before decoding."""
    try:
        rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        raise ImageReadError(path, "its Rows/Columns (0028,0010/0011) are not numbers: the header is corrupt") from None
    check_decoded_size(path, rows, columns)


def _check_decoder(dataset: Dataset, path: str | Path) -> None:
    """Fail clearly when the transfer syntax is compressed and no installed plugin decodes it."""
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None or not syntax.is_compressed:
        return
    what = f"its pixel data is compressed as '{syntax.name}' ({syntax})"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageReadError(path, f"{what}, which pydicom cannot decode; convert it to uncompressed DICOM") from None
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies)
        raise ImageReadError(
            path,
            f"{what} and no installed pydicom decoder plugin handles it ({options}); install one "
            "(the 'gdcm' plugin is the pip package python-gdcm) or convert the file to uncompressed "
            "DICOM (e.g. dcmdjpeg, gdcmconv --raw)",
        )


def _lift_functional_groups(dataset: Dataset, index: int) -> None:
    """Copy an enhanced multi-frame file's rescale and window of frame ``index`` to the top level.

    pydicom's LUT functions read top-level elements; enhanced files keep them in the Shared and
    Per-Frame Functional Groups (per-frame wins). Modifies ``dataset`` in place.
    """
    groups = []
    if dataset.get("SharedFunctionalGroupsSequence"):
        groups.append(dataset.SharedFunctionalGroupsSequence[0])
    if dataset.get("PerFrameFunctionalGroupsSequence"):
        groups.append(dataset.PerFrameFunctionalGroupsSequence[index])
    for group in groups:
        for module in _FUNCTIONAL_GROUP_MODULES:
            if group.get(module):
                for element in group[module][0]:
                    dataset[element.tag] = element


def _grayscale_to_unit(
    stored: np.ndarray,
    dataset: Dataset,
    path: str | Path,
    window: tuple[float, float] | None,
    *,
    invert: bool,
) -> np.ndarray:
    """Modality LUT, then a window (given, else the file's VOI, else min-max), then MONOCHROME1."""
    try:
        values = apply_modality_lut(stored, dataset)
        if window is not None:
            unit = apply_window(values, *window)
        elif _voi_lut(dataset) is not None or _has_window(dataset):
            unit = scale_to_range(apply_voi_lut(values, dataset), *_voi_output_range(dataset))
        else:
            unit = scale_min_max(values)
    except NoFiniteValues:
        raise
    except (ValueError, NotImplementedError, AttributeError, KeyError, IndexError) as exc:
        raise ImageReadError(
            path, f"its Modality/VOI LUT is invalid ({exc}); pass window=(center, width) to override it"
        ) from exc
    return 1.0 - unit if invert else unit


def _voi_lut(dataset: Dataset) -> Dataset | None:
    """The first complete item of the VOI LUT Sequence, if any."""
    sequence = dataset.get("VOILUTSequence")
    if sequence and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]:
        return sequence[0]
    return None


def _has_window(dataset: Dataset) -> bool:
    """True if the file carries Window Center and Window Width."""
    return dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None


def _voi_output_range(dataset: Dataset) -> tuple[float, float]:
    """The range of values ``apply_voi_lut`` can output for this file.

    Found by passing the whole input domain through it: every entry of a VOI LUT (pydicom prefers
    the LUT when both are present), or ±inf through a window, which clamp to its output limits.
    """
    lut = _voi_lut(dataset)
    if lut is not None:
        entries, first, _ = lut.LUTDescriptor
        probe = np.arange(first, first + (entries or 2**16), dtype=np.int64)
    else:
        probe = np.array([-np.inf, np.inf])
    with np.errstate(over="ignore", invalid="ignore"):
        output = np.asarray(apply_voi_lut(probe, dataset), dtype=np.float64)
    return float(output.min()), float(output.max())


def _scale_colour(stored: np.ndarray, dataset: Dataset, *, palette: bool) -> np.ndarray:
    """RGB values → ``[0, 1]`` by their bit depth (palette: the LUT's); float data is min-max scaled."""
    if not np.issubdtype(stored.dtype, np.integer):
        return scale_min_max(stored)
    bits = stored.dtype.itemsize * 8 if palette else int(dataset.get("BitsStored", stored.dtype.itemsize * 8))
    return np.clip(stored.astype(np.float32) / np.float32(2**bits - 1), 0.0, 1.0)
