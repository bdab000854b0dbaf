"""medmoe.io on NIfTI files written here with nibabel: slices, orientation, windows, failures."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmoe.errors import ImageReadError
from medmoe.io import read_image


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _marked_volume(shape: tuple[int, int, int] = (5, 4, 3)) -> np.ndarray:
    """RAS-stored volume: a bright voxel at the patient's right-anterior corner of every slice,
    and slice k filled with k + 1 elsewhere (so slices are told apart)."""
    x, y, z = shape
    volume = np.broadcast_to(np.arange(1, z + 1, dtype=np.float32), shape).copy()
    volume[x - 1, y - 1, :] = 100.0  # x = most right (R+), y = most anterior (A+)
    return volume


def test_2d_nifti_is_shown_in_radiological_view(tmp_path: Path) -> None:
    plane = np.zeros((5, 4), dtype=np.float32)
    plane[4, 3] = 1.0  # patient right (x max), anterior (y max)
    image = read_image(_save(tmp_path / "plane.nii.gz", plane))
    assert image.shape == (4, 5) and image.dtype == np.float32 and image.flags.c_contiguous
    assert image[0, 0] == 1.0 and image.sum() == 1.0  # anterior at the top, patient right on the left


def test_3d_volume_needs_slice_index(tmp_path: Path) -> None:
    path = _save(tmp_path / "vol.nii.gz", _marked_volume())
    with pytest.raises(ImageReadError, match=r"3 axial slices \(a 3-D volume of shape \(5, 4, 3\); 0 = most inferior\); pass slice_index=0\.\.2 \(on the command line --slice 0\.\.2") as info:
        read_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageReadError, match=r"slice_index=3 \(--slice 3\) is out of range"):
        read_image(path, slice_index=3)
    with pytest.raises(ImageReadError, match="for NIfTI use slice_index="):
        read_image(path, frame=0)


def test_slice_index_picks_the_axial_slice(tmp_path: Path) -> None:
    volume = _marked_volume()
    path = _save(tmp_path / "vol.nii", volume)  # uncompressed .nii too
    for k in range(3):
        image = read_image(path, slice_index=k, window=(50, 100))  # [0, 100] -> [0, 1]
        assert image.shape == (4, 5)
        assert image[0, 0] == 1.0
        np.testing.assert_allclose(image[1:, 1:], (k + 1) / 100.0, rtol=1e-6)


def test_storage_orientation_does_not_change_the_view(tmp_path: Path) -> None:
    ras = _marked_volume()
    reference = read_image(_save(tmp_path / "ras.nii.gz", ras), slice_index=1)
    # Same anatomy stored left-posterior-superior (as ITK/DICOM tools write): x and y flipped.
    lps = ras[::-1, ::-1, :].copy()
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:3, 3] = [4.0, 3.0, 0.0]
    np.testing.assert_array_equal(read_image(_save(tmp_path / "lps.nii.gz", lps, lps_affine), slice_index=1), reference)
    # Same anatomy stored with axes permuted (slices along the first storage axis).
    permuted = np.transpose(ras, (2, 0, 1)).copy()
    permuted_affine = np.zeros((4, 4))
    permuted_affine[0, 1] = permuted_affine[1, 2] = permuted_affine[2, 0] = permuted_affine[3, 3] = 1.0
    np.testing.assert_array_equal(
        read_image(_save(tmp_path / "perm.nii.gz", permuted, permuted_affine), slice_index=1), reference
    )


def test_single_slice_volume_and_trailing_singletons_read_as_2d(tmp_path: Path) -> None:
    plane = np.zeros((5, 4), dtype=np.float32)
    plane[4, 3] = 1.0
    expected = read_image(_save(tmp_path / "plane.nii.gz", plane))
    for shape in ((5, 4, 1), (5, 4, 1, 1)):
        path = _save(tmp_path / f"s{len(shape)}.nii.gz", plane.reshape(shape))
        np.testing.assert_array_equal(read_image(path), expected)
        np.testing.assert_array_equal(read_image(path, slice_index=0), expected)


def test_4d_nifti_fails_clearly(tmp_path: Path) -> None:
    path = _save(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 3, 2), dtype=np.float32))
    with pytest.raises(ImageReadError, match=r"4-D image of shape \(4, 4, 3, 2\)"):
        read_image(path, slice_index=0)


def test_ct_nifti_window_in_hu(tmp_path: Path) -> None:
    hu = np.array([[-1000.0], [0.0], [40.0], [80.0]], dtype=np.float32)  # x = 4 voxels, y = 1
    image = read_image(_save(tmp_path / "ct.nii.gz", hu), window="brain")
    np.testing.assert_allclose(image[0], [1.0, 0.5, 0.0, 0.0])  # columns run from patient right (x max)


def test_scl_slope_is_applied(tmp_path: Path) -> None:
    stored = np.array([[0, 10], [20, 30]], dtype=np.int16)
    nifti = nib.Nifti1Image(stored, np.eye(4))
    nifti.header.set_slope_inter(2.0, -20.0)  # values -20, 0, 20, 40
    path = tmp_path / "scaled.nii.gz"
    nib.save(nifti, path)
    image = read_image(path, window=(10, 20))  # [0, 20] -> [0, 1]
    np.testing.assert_allclose(np.sort(image.ravel()), [0.0, 0.0, 1.0, 1.0])


def test_nan_voxels_become_background(tmp_path: Path) -> None:
    data = np.array([[np.nan, 1.0], [2.0, 3.0]], dtype=np.float32)
    image = read_image(_save(tmp_path / "nan.nii.gz", data))
    assert np.isfinite(image).all()
    np.testing.assert_allclose(np.sort(image.ravel()), [0.0, 0.0, 0.5, 1.0])


def test_corrupt_nifti_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip" * 20)
    with pytest.raises(ImageReadError, match="not a readable NIfTI") as info:
        read_image(path)
    assert str(path) in str(info.value)
