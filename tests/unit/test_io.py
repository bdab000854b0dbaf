"""medmoe.io: format detection, PNG/JPEG/TIFF/BMP reading, intensity helpers and error messages.

DICOM and NIfTI have their own files (test_io_dicom.py, test_io_nifti.py). All data is made here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medmoe.errors import ImageReadError
from medmoe.io import (
    SUPPORTED_SUFFIXES,
    WINDOW_PRESETS,
    count_planes,
    file_suffix,
    is_dicom,
    is_image_file,
    read_image,
    to_grayscale,
)
from medmoe.io.intensity import apply_window, fill_non_finite, resolve_window, scale_min_max
from medmoe.io.policy import NoFiniteValues

# --- formats -------------------------------------------------------------------------------------


def test_supported_suffixes_cover_the_issue_list() -> None:
    expected = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".nii", ".nii.gz"}
    assert set(SUPPORTED_SUFFIXES) == expected


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a/scan.NII.GZ", ".nii.gz"), ("x.Png", ".png"), ("archive.tar.gz", ".gz"), ("IM0001", "")],
)
def test_file_suffix_keeps_nii_gz_whole(name: str, suffix: str) -> None:
    assert file_suffix(name) == suffix


def test_is_dicom_reads_the_preamble(tmp_path: Path) -> None:
    fake = tmp_path / "IM0001"
    fake.write_bytes(b"\0" * 128 + b"DICM" + b"rest")
    png = tmp_path / "a.png"
    Image.new("L", (4, 4)).save(png)
    short = tmp_path / "short"
    short.write_bytes(b"DICM")
    assert is_dicom(fake)
    assert not is_dicom(png)
    assert not is_dicom(short)
    assert not is_dicom(tmp_path / "missing")
    assert is_image_file(fake) and is_image_file(png) and is_image_file(tmp_path / "v.nii.gz")
    assert not is_image_file(short)


# --- raster images ----------------------------------------------------------------------------------


def test_gray_png_8bit_is_divided_by_255(tmp_path: Path) -> None:
    pixels = np.array([[0, 51], [128, 255]], dtype=np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(pixels).save(path)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (2, 2) and image.flags.c_contiguous
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray_is_scaled_by_65535_not_clipped(tmp_path: Path, suffix: str) -> None:
    pixels = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(pixels).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I;16")
    image = read_image(path)
    np.testing.assert_allclose(image, pixels / 65535.0, rtol=1e-6)
    assert 0.015 < image[0, 1] < 0.016  # 1000/65535, not clipped to 1


def test_rgba_png_drops_alpha_and_keeps_colour(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red: colour kept (alpha ignored, not composited)
    rgba[1, 1] = (0, 0, 255, 255)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = read_image(path)
    assert image.shape == (2, 2, 3)
    np.testing.assert_allclose(image[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(image[1, 1], [0.0, 0.0, 1.0])


def test_la_png_is_grayscale_without_alpha(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.new("LA", (3, 2), (200, 10)).save(path)
    image = read_image(path)
    assert image.shape == (2, 3)
    np.testing.assert_allclose(image, 200 / 255.0)


def test_palette_png_expands_to_rgb(tmp_path: Path) -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    palette_image.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    palette_image.save(path)
    image = read_image(path)
    assert image.shape == (1, 2, 3)
    np.testing.assert_allclose(image[0, 1], np.array([10, 200, 30]) / 255.0, atol=1e-7)
    np.testing.assert_allclose(image[0, 0], 0.0)


def test_one_bit_image_is_zero_or_one(tmp_path: Path) -> None:
    bits = Image.new("1", (4, 2), 0)
    bits.putpixel((3, 1), 1)
    path = tmp_path / "b.png"
    bits.save(path)
    image = read_image(path)
    assert image.shape == (2, 4)
    assert image[1, 3] == 1.0 and image.sum() == 1.0


def test_gray_looking_rgb_is_returned_as_2d(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "rgb_gray.png"
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(path)
    image = read_image(path)
    assert image.shape == (3, 4)
    np.testing.assert_allclose(image, gray / 255.0)


def test_colour_jpeg_and_bmp(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 220
    rgb[..., 2] = np.arange(16, dtype=np.uint8)[None, :] * 10
    for suffix in (".jpg", ".bmp"):
        path = tmp_path / f"c{suffix}"
        Image.fromarray(rgb).save(path)
        image = read_image(path)
        assert image.shape == (16, 16, 3) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert image[..., 0].mean() > 0.8  # red stays in channel 0 (no BGR mix-up)
    np.testing.assert_allclose(read_image(tmp_path / "c.bmp"), rgb / 255.0, atol=1e-7)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels).save(path, exif=exif)
    image = read_image(path)
    assert image.shape == (3, 2)
    assert image[0, 1] == 1.0 and image.sum() == 1.0  # stored top-left → displayed top-right


def test_multipage_tiff_needs_frame(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((2, 2), value, dtype=np.uint8)) for value in (10, 250)]
    path = tmp_path / "stack.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.raises(ImageReadError, match=r"2 pages; pass frame=0\.\.1 \(on the command line --frame 0\.\.1, or --frame middle\)"):
        read_image(path)
    np.testing.assert_allclose(read_image(path, frame=1), 250 / 255.0)
    with pytest.raises(ImageReadError, match=r"frame=2 \(--frame 2\) is out of range"):
        read_image(path, frame=2)


def test_float_tiff_with_nan_is_min_max_scaled(tmp_path: Path) -> None:
    values = np.array([[np.nan, -2.0], [0.0, 2.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    image = read_image(path)
    assert np.isfinite(image).all()
    np.testing.assert_allclose(image, [[0.0, 0.0], [0.5, 1.0]])


def test_tiff_samples_pillow_cannot_decode_are_read_with_tifffile(tmp_path: Path) -> None:
    ramp = np.linspace(-3.0, 5.0, 48).reshape(6, 8)
    for dtype in (np.float64, np.float16):
        tifffile.imwrite(tmp_path / f"{np.dtype(dtype).name}.tif", ramp.astype(dtype))
        image = read_image(tmp_path / f"{np.dtype(dtype).name}.tif")
        assert image.shape == (6, 8) and image.dtype == np.float32
        np.testing.assert_allclose(image, (ramp - ramp.min()) / np.ptp(ramp), atol=2e-3)  # min-max, like mode F
    colour = np.random.default_rng(0).random((6, 8, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif"), (colour - colour.min()) / np.ptp(colour), atol=1e-6)
    stack = np.stack([ramp * k for k in (1.0, -1.0, 2.0)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    assert count_planes(tmp_path / "stack.tif") == 3
    np.testing.assert_allclose(read_image(tmp_path / "stack.tif", frame=1), 1 - (ramp - ramp.min()) / np.ptp(ramp),
                               atol=1e-6)
    with pytest.raises(ImageReadError, match="3 pages; pass frame=0..2"):
        read_image(tmp_path / "stack.tif")


# --- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_fails_clearly(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full{suffix}"
    Image.fromarray(noise).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(cut)
    assert str(cut) in str(info.value)
    assert "copy the file again" in str(info.value)


def test_garbage_with_image_suffix_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(b"this is not a png at all")
    with pytest.raises(ImageReadError, match="not a PNG/JPEG/TIFF/BMP"):
        read_image(path)


def test_empty_file_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageReadError, match=r"empty \(0 bytes\)") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "x.png"
    with pytest.raises(ImageReadError, match="no such file") as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"cannot read image '{path}'") and "check the path" in message


def test_directory_fails_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "scans.png"
    folder.mkdir()
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(folder)


def test_unknown_format_lists_supported_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match=r"unknown image format '\.txt'.*\.nii\.gz"):
        read_image(path)


def test_arguments_that_do_not_apply_fail(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.new("L", (2, 2)).save(path)
    with pytest.raises(ImageReadError, match="window= applies to DICOM and NIfTI"):
        read_image(path, window="brain")
    with pytest.raises(ImageReadError, match=r"slice_index= \(--slice\) applies to NIfTI"):
        read_image(path, slice_index=0)


# --- intensity helpers ------------------------------------------------------------------------------


def test_constant_images_map_to_zeros_and_all_nan_ones_are_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(scale_min_max(np.full((3, 3), 7.0)), 0.0)
    with pytest.raises(NoFiniteValues):
        scale_min_max(np.full((2, 2), np.nan))
    with pytest.raises(NoFiniteValues):
        apply_window(np.full((2, 2), np.nan), 40, 80)
    path = tmp_path / "all_nan.tif"
    Image.fromarray(np.full((16, 16), np.nan, dtype=np.float32)).save(path)
    with pytest.raises(ImageReadError, match="no pixel value is finite"):
        read_image(path)


def test_non_finite_values_become_the_image_extremes() -> None:
    filled = fill_non_finite(np.array([np.nan, -np.inf, 1.0, 5.0, np.inf]))
    np.testing.assert_array_equal(filled, [1.0, 1.0, 1.0, 5.0, 5.0])


def test_window_convention_and_presets() -> None:
    hu = np.array([-1000.0, 0.0, 40.0, 80.0, 1000.0])
    np.testing.assert_allclose(apply_window(hu, *WINDOW_PRESETS["brain"]), [0, 0, 0.5, 1, 1])
    assert resolve_window("Brain") == (40.0, 80.0)
    assert resolve_window((50, 350)) == (50.0, 350.0)
    assert resolve_window("40,80") == resolve_window(" 40 , 80") == (40.0, 80.0)  # the CLI's and REST's text
    for bad in ("nope", (40, 0), (40, float("nan")), ("a", "b"), (1, 2, 3), "1,2,3", "40,x", "40,-1"):
        with pytest.raises(ValueError):
            resolve_window(bad)  # type: ignore[arg-type]


def test_to_grayscale_uses_bt601_luma() -> None:
    rgb = np.zeros((1, 4, 3), dtype=np.float32)
    rgb[0, 0, 0] = rgb[0, 1, 1] = rgb[0, 2, 2] = 1.0
    rgb[0, 3] = 1.0
    gray = to_grayscale(rgb)
    assert gray.shape == (1, 4) and gray.dtype == np.float32
    np.testing.assert_allclose(gray[0], [0.299, 0.587, 0.114, 1.0], atol=1e-6)
    plane = np.full((2, 2), 0.25, dtype=np.float32)
    np.testing.assert_array_equal(to_grayscale(plane), plane)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        to_grayscale(np.zeros((2, 2, 4)))
