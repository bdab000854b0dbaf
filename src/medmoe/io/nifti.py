"""NIfTI files (``.nii``, ``.nii.gz``), read with nibabel.

Orientation: the image is first reoriented to the closest canonical RAS+ orientation
(``nibabel.as_closest_canonical``: axes point to patient Right, Anterior, Superior), whatever the
storage order. A 3-D volume is then cut along its last canonical axis, so ``slice_index`` picks an
*axial* slice, 0 = most inferior. The 2-D slice (or a 2-D image) is shown as a radiologist views
it: transposed and flipped so that row 0 is anterior (superior for a coronal or sagittal image) and
column 0 is the patient's right (radiological convention). No resampling: anisotropic voxels stay
as stored.

Intensity: ``scl_slope``/``scl_inter`` are applied (nibabel); then ``window=(center, width)`` if
given (e.g. HU of a CT), else min-max scaling of the slice.

Trailing singleton dimensions are dropped; a real 4-D image (time series, several channels) fails
clearly, as does a 3-D volume without ``slice_index`` (unless it has one slice).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from medmoe.errors import ImageReadError
from medmoe.io.choice import Choice, choose_index
from medmoe.io.intensity import apply_window, scale_min_max
from medmoe.io.policy import check_decoded_size

_NIBABEL_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, gzip.BadGzipFile, zlib.error)


def read_nifti(
    path: str | Path,
    *,
    slice_index: Choice = None,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Read a 2-D NIfTI image, or one axial slice of a 3-D volume.

    Args:
        path: the ``.nii`` or ``.nii.gz`` file.
        slice_index: axial slice of a 3-D volume, 0-based from inferior (see module docstring);
            required when the volume has more than one slice.
        window: ``(center, width)`` in the file's units; default: min-max scaling of the slice.

    Returns:
        ``float32`` ``(H, W)`` in ``[0, 1]``.

    Raises:
        ImageReadError: unreadable or corrupt file, RGB voxels, 4-D data, or a missing or
            out-of-range ``slice_index``.
    """
    try:
        values = _plane(nib.as_closest_canonical(_load_scalar(path)), path, slice_index)
    except _NIBABEL_ERRORS as exc:
        raise ImageReadError(path, f"it is not a readable NIfTI file ({exc}); re-export or copy it again") from exc
    check_decoded_size(path, *values.shape)
    displayed = values.T[::-1, ::-1]
    return apply_window(displayed, *window) if window is not None else scale_min_max(displayed)


def count_axial_slices(path: str | Path) -> int:
    """How many axial slices :func:`read_nifti` chooses among (1 for a 2-D image or a single slice),
    from the header: the voxels are not read.

    Raises:
        ImageReadError: unreadable, RGB or 4-D (as :func:`read_nifti`).
    """
    try:
        image = _load_scalar(path)
        if image.ndim < 3 or 1 in image.shape:
            return 1
        axial = int(np.flatnonzero(nib.io_orientation(image.affine)[:, 0] == 2)[0])  # the axis along S
        return int(image.shape[axial])
    except _NIBABEL_ERRORS as exc:
        raise ImageReadError(path, f"it is not a readable NIfTI file ({exc}); re-export or copy it again") from exc


def _load_scalar(path: str | Path) -> nib.Nifti1Image:
    """The image with trailing singleton axes dropped (voxels not read); RGB and 4-D refused."""
    image = nib.funcs.squeeze_image(nib.load(path))
    if image.get_data_dtype().names:
        raise ImageReadError(path, "it stores RGB voxels; medmoe reads scalar NIfTI images only")
    if image.ndim > 3:
        raise ImageReadError(
            path,
            f"it is a {image.ndim}-D image of shape {image.shape} (e.g. a time series); medmoe reads "
            "2-D images and slices of 3-D volumes — save one 3-D volume (nibabel: image.slicer[..., t])",
        )
    return image


def _plane(canonical: nib.Nifti1Image, path: str | Path, slice_index: Choice) -> np.ndarray:
    """The 2-D plane to show, in canonical (RAS+) storage order ``(first axis, second axis)``.

    A 2-D image, or a 3-D one with a single slice along some axis, is that plane (coronal and
    sagittal single slices included). Otherwise the axial slice ``slice_index``.
    """
    shape = canonical.shape
    if canonical.ndim == 3 and 1 not in shape:
        index = _slice_index(shape[-1], shape, path, slice_index)
        return np.asarray(canonical.dataobj[..., index], dtype=np.float64)
    _slice_index(1, shape, path, slice_index)
    values = np.asarray(canonical.dataobj, dtype=np.float64)
    return values if values.ndim == 2 else np.squeeze(values, axis=shape.index(1))


def _slice_index(n_slices: int, shape: tuple[int, ...], path: str | Path, slice_index: Choice) -> int:
    """The axial slice ``slice_index`` picks among ``n_slices`` (:mod:`medmoe.io.choice`; 0 = most inferior)."""
    return choose_index(n_slices, slice_index, path, unit="axial slice", flag="--slice", keyword="slice_index",
                        note=f" (a 3-D volume of shape {shape}; 0 = most inferior)")
