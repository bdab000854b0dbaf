"""medmoe.io.planes / count_planes (every frame or slice as its own image) and the folder walk
(hidden entries, folder links, broken and looping links)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medmoe.data.sources._base import list_images
from medmoe.errors import ImageReadError
from medmoe.io import Plane, count_planes, planes, read_image, read_plane
from medmoe.io.discovery import broken_link_reason, walk_files


def _tiff(path: Path, values: tuple[int, ...]) -> Path:
    pages = [Image.fromarray(np.full((9, 9), v, dtype=np.uint8)) for v in values]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def test_all_frames_of_a_tiff_are_planes_and_read_as_their_page(tmp_path: Path) -> None:
    path = _tiff(tmp_path / "stack.tif", (10, 20, 30))
    assert count_planes(path) == 3
    found = planes(path, frame="all")
    assert found == [Plane(path, frame=0), Plane(path, frame=1), Plane(path, frame=2)]
    assert [float(read_plane(p)[0, 0]) for p in found] == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    assert planes(path, frame="middle") == [Plane(path, frame=1)] and planes(path, frame="last")[0].index == 2


def test_single_plane_files_and_other_formats_ignore_the_choice(tmp_path: Path) -> None:
    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(png)
    assert planes(png, frame="all", slice_index="all") == [Plane(png)]  # no frame, and slices are NIfTI's
    stack = _tiff(tmp_path / "stack.tif", (1, 2))
    assert planes(stack, slice_index="middle") == [Plane(stack)]  # the read then asks for --frame
    with pytest.raises(ImageReadError, match="2 pages"):
        read_plane(planes(stack, slice_index="middle")[0])


def test_unsatisfiable_choices_and_unreadable_headers_pass_through_to_the_reads_message(tmp_path: Path) -> None:
    stack = _tiff(tmp_path / "stack.tif", (1, 2))
    assert planes(stack, frame=5) == [Plane(stack, frame=5)]
    with pytest.raises(ImageReadError, match="out of range"):
        read_plane(planes(stack, frame=5)[0])
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    assert planes(broken, frame="all") == [Plane(broken, frame="all")]
    with pytest.raises(ImageReadError, match="corrupt"):
        read_plane(planes(broken, frame="all")[0])
    with pytest.raises(ImageReadError, match="every page as its own image"):
        read_image(stack, frame="all")


@pytest.mark.parametrize("storage", ["ras", "lps", "permuted"])
def test_nifti_slice_count_matches_the_reader_in_any_storage_order(tmp_path: Path, storage: str) -> None:
    ras = np.broadcast_to(np.arange(1, 6, dtype=np.float32), (4, 3, 5)).copy()
    data, affine = ras, np.eye(4)
    if storage == "lps":
        data, affine = ras[::-1, ::-1, :].copy(), np.diag([-1.0, -1.0, 1.0, 1.0])
    elif storage == "permuted":  # slices along the first storage axis
        data = np.transpose(ras, (2, 0, 1)).copy()
        affine = np.zeros((4, 4))
        affine[0, 1] = affine[1, 2] = affine[2, 0] = affine[3, 3] = 1.0
    path = tmp_path / f"{storage}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    assert count_planes(path) == 5
    found = planes(path, slice_index="all", frame="all")
    assert [p.slice_index for p in found] == [0, 1, 2, 3, 4] and all(p.frame is None for p in found)
    means = [float(read_image(path, slice_index=4).mean()), float(read_image(path, slice_index=0).mean())]
    assert means == [0.0, 0.0]  # each slice is constant: min-max scaled to 0; the read succeeds at both ends
    with pytest.raises(ImageReadError, match="out of range"):
        read_image(path, slice_index=5)


def test_the_walk_follows_folder_links_once_and_keeps_broken_links(tmp_path: Path) -> None:
    real, data = tmp_path / "real", tmp_path / "data"
    real.mkdir()
    data.mkdir()
    (real / "a.png").write_bytes(b"x")
    (data / ".hidden.png").write_bytes(b"x")
    (data / "linked").symlink_to(real)
    (data / "again").symlink_to(real)
    (data / "up").symlink_to(data)
    (data / "dangling.png").symlink_to(tmp_path / "missing.png")
    (data / "loop.png").symlink_to(data / "loop.png")
    walk = walk_files(data)
    assert [p.relative_to(data).as_posix() for p in walk.files] == ["again/a.png", "dangling.png", "loop.png"]
    assert len(walk.notes) == 2 and all("searched once" in note for note in walk.notes)
    assert "does not exist" in (broken_link_reason(data / "dangling.png") or "")
    assert "leads back to itself" in (broken_link_reason(data / "loop.png") or "")
    assert broken_link_reason(real / "a.png") is None
    with pytest.raises(ImageReadError, match="symbolic link to .*missing.png', which does not exist"):
        read_image(data / "dangling.png")
    with pytest.raises(ImageReadError, match="a loop"):
        read_image(data / "loop.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = list_images(data, recursive=True)
    assert [p.name for p in listed] == ["a.png"]
    skipped = [str(w.message) for w in caught if str(w.message).startswith("skipped")]
    assert sorted(m.split("'")[1].rsplit("/", 1)[1] for m in skipped) == ["dangling.png", "loop.png"]
    assert sum("searched once" in str(w.message) for w in caught) == 2


def test_a_folder_that_cannot_be_listed_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.png").write_bytes(b"x")
    (tmp_path / "locked").mkdir()
    real = Path.iterdir

    def iterdir(self: Path):  # noqa: ANN202 - as root, chmod cannot lock a folder: refuse it here
        if self.name == "locked":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    walk = walk_files(tmp_path)
    assert [p.name for p in walk.files] == ["a.png"]
    assert walk.notes == [f"'{tmp_path / 'locked'}' could not be listed (Permission denied): its files are left out"]
