"""medmoe.io on DICOM: pydicom's bundled files, the pydicom-data package (local, never downloaded),
and synthetic files with known values written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from medmoe.errors import ImageReadError
from medmoe.io import is_image_file, read_dicom_tags, read_image
from medmoe.io.intensity import apply_window


def _testdata(name: str) -> Path:
    """A file of pydicom or the installed pydicom-data package; ``download=False`` keeps it offline."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not installed locally (pydicom-data package missing?)"
    return Path(path)


@pytest.fixture
def ct_small() -> Path:
    return _testdata("CT_small.dcm")


def _write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    intercept: float | None = -1024.0,
    window: tuple[float, float] | None = None,
    with_pixels: bool = True,
    **tags: str,
) -> Path:
    """Write a small uncompressed CT-like DICOM with ``stored`` (uint16) as its pixel values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if intercept is not None:
        ds.RescaleSlope = 1
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.set_pixel_data(stored.astype(np.uint16), photometric, 12)
    ds.save_as(path, enforce_file_format=True)
    return path


def _ct_with_hu(path: Path, hu: np.ndarray, **kwargs: object) -> Path:
    return _write_dicom(path, np.asarray(hu) + 1024, **kwargs)  # stored = HU + 1024, intercept -1024


HU_ROW = np.array([[-1000, 0, 40, 80, 400, 1000]])


# --- synthetic files with known values --------------------------------------------------------------


def test_brain_window_maps_40_hu_to_half(tmp_path: Path) -> None:
    path = _ct_with_hu(tmp_path / "ct.dcm", HU_ROW)
    np.testing.assert_allclose(read_image(path, window="brain")[0], [0, 0, 0.5, 1, 1, 1])
    np.testing.assert_allclose(read_image(path, window=(40, 80)), read_image(path, window="brain"))


def test_presets_change_the_output_as_expected(tmp_path: Path) -> None:
    path = _ct_with_hu(tmp_path / "ct.dcm", HU_ROW)
    bone = read_image(path, window="bone")[0]  # L400 W1800: [-500, 1300] HU
    np.testing.assert_allclose(bone[4], 0.5)
    np.testing.assert_allclose(bone[1], 500 / 1800, rtol=1e-6)
    lung = read_image(path, window="lung")[0]  # L-600 W1500: [-1350, 150] HU
    np.testing.assert_allclose(lung[0], 350 / 1500, rtol=1e-6)
    assert lung[4] == 1.0 and read_image(path, window="brain")[0, 4] == 1.0


def test_default_is_min_max_of_rescaled_values(tmp_path: Path) -> None:
    path = _ct_with_hu(tmp_path / "ct.dcm", HU_ROW)
    np.testing.assert_allclose(read_image(path)[0], (HU_ROW[0] + 1000) / 2000.0, rtol=1e-6)


def test_file_window_is_used_when_no_window_is_given(tmp_path: Path) -> None:
    path = _ct_with_hu(tmp_path / "ct.dcm", HU_ROW, window=(40, 80))
    image = read_image(path)[0]
    # DICOM LINEAR window (PS3.3 C.11.2.1.2.1): 40 HU -> ((40 - 39.5) / 79 + 0.5) of the output range.
    np.testing.assert_allclose(image, [0, 0, 0.5 + 0.5 / 79, 1, 1, 1], atol=1e-6)
    # An explicit window overrides the file's.
    np.testing.assert_allclose(read_image(path, window="bone")[0, 4], 0.5)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 100, 200]])
    mono1 = _write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", intercept=None)
    mono2 = _write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2", intercept=None)
    np.testing.assert_allclose(read_image(mono1)[0], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(read_image(mono1), 1.0 - read_image(mono2))


def test_constant_dicom_maps_to_zeros(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "flat.dcm", np.full((4, 4), 77))
    np.testing.assert_array_equal(read_image(path), 0.0)


def test_dicom_without_pixel_data_fails_clearly(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "sr.dcm", np.zeros((1, 1)), with_pixels=False)
    with pytest.raises(ImageReadError, match="no pixel data") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_dcm_suffix_on_non_dicom_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_text("patient list, not an image\n" * 10)
    with pytest.raises(ImageReadError, match="not a DICOM image"):
        read_image(path)


def test_read_dicom_tags_returns_strings(tmp_path: Path) -> None:
    path = _ct_with_hu(tmp_path / "ct.dcm", HU_ROW, BodyPartExamined="HEAD ", PatientName="Doe^Jane")
    tags = read_dicom_tags(path)
    assert tags["Modality"] == "CT" and tags["BodyPartExamined"] == "HEAD"
    assert tags["SeriesDescription"] == ""
    assert "PatientName" not in tags
    assert all(isinstance(value, str) for value in tags.values())
    without = _ct_with_hu(tmp_path / "nobody.dcm", HU_ROW)
    assert read_dicom_tags(without)["BodyPartExamined"] == ""
    with pytest.raises(ImageReadError, match="not a readable DICOM"):
        read_dicom_tags(tmp_path / "missing.dcm")


# --- pydicom's and pydicom-data's real files ----------------------------------------------------------


def test_ct_small_has_rescale_applied(ct_small: Path) -> None:
    dataset = pydicom.dcmread(ct_small)
    assert float(dataset.RescaleIntercept) == -1024.0
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    image = read_image(ct_small, window="abdomen")
    assert image.shape == (128, 128) and image.dtype == np.float32
    np.testing.assert_allclose(image, apply_window(hu, 40, 400), atol=1e-6)
    default = read_image(ct_small)
    assert default.min() == 0.0 and default.max() == 1.0


def test_suffixless_dicom_copy_is_read(tmp_path: Path, ct_small: Path) -> None:
    copy = tmp_path / "IM0001"
    shutil.copyfile(ct_small, copy)
    assert is_image_file(copy)
    np.testing.assert_array_equal(read_image(copy), read_image(ct_small))


def test_cr_chest_radiograph_monochrome1() -> None:
    path = _testdata("RG1_UNCR.dcm")  # CR chest, MONOCHROME1, Window 15000/30000
    tags = read_dicom_tags(path)
    assert (tags["Modality"], tags["BodyPartExamined"], tags["PhotometricInterpretation"]) == (
        "CR",
        "CHEST",
        "MONOCHROME1",
    )
    image = read_image(path)
    stored = pydicom.dcmread(path).pixel_array[::8, ::8].astype(np.float64)
    assert image.shape == (1955, 1841) and image.min() >= 0.0 and image.max() <= 1.0
    # MONOCHROME1: high stored values are dark, so output falls as stored values rise.
    assert np.corrcoef(stored.ravel(), image[::8, ::8].ravel())[0, 1] < -0.99


def test_multi_frame_needs_frame() -> None:
    path = _testdata("emri_small.dcm")  # MR, 10 frames of 64 x 64
    with pytest.raises(ImageReadError, match=r"10 frames; pass frame=0\.\.9"):
        read_image(path)
    frames = pydicom.dcmread(path).pixel_array
    image = read_image(path, frame=3)
    expected = (frames[3] - frames[3].min()) / float(frames[3].max() - frames[3].min())
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert not np.allclose(image, read_image(path, frame=4))
    with pytest.raises(ImageReadError, match=r"frame=10 \(--frame 10\) is out of range"):
        read_image(path, frame=10)
    # policies: middle/first/last pick per file; a single-frame file ignores any choice
    np.testing.assert_array_equal(read_image(path, frame="middle"), read_image(path, frame=5))
    np.testing.assert_array_equal(read_image(path, frame="last"), read_image(path, frame=9))
    single = _testdata("CT_small.dcm")
    np.testing.assert_array_equal(read_image(single, frame=7), read_image(single))
    with pytest.raises(ImageReadError, match="for multi-frame DICOM use frame="):
        read_image(path, slice_index=3)


def test_a_corrupt_frame_count_is_refused_not_raised() -> None:
    with pytest.raises(ImageReadError, match=r"Number of Frames \(0028,0008\) is '1A'"):
        read_image(_testdata("badVR.dcm"))


def test_enhanced_multi_frame_uses_functional_groups() -> None:
    path = _testdata("eCT_Supplemental.dcm")  # rescale -1024 and window 49/102 live in functional groups
    stored = pydicom.dcmread(path).pixel_array[0]
    image = read_image(path, frame=0)
    np.testing.assert_allclose(image, apply_window(stored - 1024.0, 49, 102), atol=0.01)


@pytest.mark.parametrize("compressed", ["emri_small_jpeg_2k_lossless.dcm", "emri_small_RLE.dcm",
                                        "emri_small_jpeg_ls_lossless.dcm"])
def test_lossless_compressed_frames_equal_uncompressed(compressed: str) -> None:
    reference = read_image(_testdata("emri_small.dcm"), frame=2)
    np.testing.assert_array_equal(read_image(_testdata(compressed), frame=2), reference)


def test_jpeg_baseline_colour_decodes() -> None:
    image = read_image(_testdata("color3d_jpeg_baseline.dcm"), frame=0)  # YBR_FULL_422, 120 frames
    assert image.shape == (480, 640, 3) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.01


def test_jpeg_lossless_decodes_with_the_shipped_plugins() -> None:
    assert get_decoder(JPEGLosslessSV1).is_available  # pylibjpeg-libjpeg is a dependency
    image = read_image(_testdata("JPEG-LL.dcm"))
    assert image.shape == (1024, 256) and image.min() >= 0.0 and image.max() == 1.0


def test_a_missing_decoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unavailable:
        is_available = False
        missing_dependencies = ("pylibjpeg-libjpeg (pip install pylibjpeg-libjpeg)",)

    monkeypatch.setattr("medmoe.io.dicom.get_decoder", lambda syntax: Unavailable())
    path = _testdata("JPEG-LL.dcm")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "JPEG Lossless" in message and JPEGLosslessSV1 in message
    assert "pylibjpeg-libjpeg" in message and str(path) in message


def test_ybr_and_rgb_dicom_give_the_same_colours() -> None:
    rgb = read_image(_testdata("SC_rgb.dcm"))
    ybr = read_image(_testdata("SC_ybr_full_uncompressed.dcm"))
    assert rgb.shape == ybr.shape == (100, 100, 3)
    np.testing.assert_allclose(ybr, rgb, atol=0.03)
    np.testing.assert_allclose(read_image(_testdata("SC_rgb_16bit.dcm")), rgb, atol=0.01)
    with pytest.raises(ImageReadError, match="window= applies to grayscale"):
        read_image(_testdata("SC_rgb.dcm"), window="brain")


def test_palette_dicom_without_preamble_is_read() -> None:
    path = _testdata("OT-PAL-8-face.dcm")  # no 'DICM' preamble, no transfer syntax, PALETTE COLOR
    image = read_image(path)
    assert image.shape == (480, 640, 3) and image.std() > 0.05
