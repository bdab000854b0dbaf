"""ImageDataset: preprocessing, masks, batching, materialising, the preprocessed cache, bad files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import medmoe.data.dataset as dataset_module
from medmoe.data.dataset import Batch, ImageDataset, collate
from medmoe.data.manifest import Manifest, Sample
from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.data.transforms import rasterize_boxes, resize_mask
from medmoe.errors import ConfigError, DatasetError, ImageReadError
from medmoe.tasks import Task, TaskRegistry, default_registry


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, n_train=6, n_test_normal=2, n_test_abnormal=3, size=48, seed=0,
                                   tasks=["brain_mri", "breast_us", "head_ct"])


def _png(path: Path, pixels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.name


def _manifest(root: Path, *samples: Sample) -> Manifest:
    return Manifest(root=root, samples=list(samples))


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every path the dataset decodes."""
    calls: list[Path] = []
    real: Callable[..., np.ndarray] = dataset_module.read_image

    def counting(path: Path, **kwargs: object) -> np.ndarray:
        calls.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(dataset_module, "read_image", counting)
    return calls


# --- items and preprocessing ------------------------------------------------------------------------


def test_items_have_the_documented_shapes_and_fields(synthetic: Manifest) -> None:
    tasks = default_registry()
    ds = ImageDataset.from_manifests([synthetic], tasks, split="test", resolution=32)
    assert len(ds) == 3 * (2 + 3)
    for i in range(len(ds)):
        item = ds[i]
        sample = ds.entries[i][1]
        assert item.image.shape == (1, 32, 32) and item.image.dtype == torch.float32
        assert 0.0 <= item.image.min() and item.image.max() <= 1.0 and item.image.std() > 0.05
        assert item.mask.shape == (1, 32, 32) and item.mask.dtype == torch.float32
        assert set(item.mask.unique().tolist()) <= {0.0, 1.0}
        assert item.label == sample.label and item.index == i
        assert item.task_index == tasks.index(sample.task)
        assert item.has_mask == (sample.label == 1) == bool(item.mask.sum() > 0)
    assert ds[-1].index == len(ds) - 1
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_image_is_squashed_with_antialiasing_and_rgb_becomes_luma(tmp_path: Path) -> None:
    # 40 rows x 80 columns, left half pure red, right half pure blue: squashed, not cropped.
    rgb = np.zeros((40, 80, 3), dtype=np.uint8)
    rgb[:, :40, 0] = 255
    rgb[:, 40:, 2] = 255
    name = _png(tmp_path / "rgb.png", rgb)
    ds = ImageDataset([(_manifest(tmp_path), Sample(name, "fundus", 0, "train"))], default_registry(), resolution=16)
    image = ds[0].image[0]
    assert image.shape == (16, 16)
    # float16 storage: within 2.4e-4 of the BT.601 luma of red (0.299) and blue (0.114).
    torch.testing.assert_close(image[:, :7], torch.full((16, 7), 0.299), atol=3e-4, rtol=0)
    torch.testing.assert_close(image[:, 9:], torch.full((16, 7), 0.114), atol=3e-4, rtol=0)
    assert 0.114 < image[0, 7] < 0.299 and 0.114 < image[0, 8] < 0.299  # blended edge (antialiased)


def test_three_channel_tasks_repeat_gray(tmp_path: Path) -> None:
    name = _png(tmp_path / "gray.png", np.full((20, 20), 128, dtype=np.uint8))
    tasks = TaskRegistry([Task("eye_rgb", "eye", "fundus", "Colour fundus.", channels=3)])
    ds = ImageDataset([(_manifest(tmp_path), Sample(name, "eye_rgb", 0, "train"))], tasks, resolution=8, channels=3)
    assert ds[0].image.shape == (3, 8, 8)
    torch.testing.assert_close(ds[0].image, torch.full((3, 8, 8), 128 / 255), atol=3e-4, rtol=0)


def test_a_colour_dataset_keeps_colour_and_replicates_a_gray_tasks_images(tmp_path: Path) -> None:
    colour = np.zeros((20, 20, 3), dtype=np.uint8)
    colour[..., 0] = 200  # red
    names = [_png(tmp_path / "red.png", colour), _png(tmp_path / "red-for-gray.png", colour)]
    tasks = TaskRegistry([Task("eye_rgb", "eye", "fundus", "Colour fundus.", channels=3),
                          Task("chest", "chest", "X-ray", "Chest X-ray.")])
    rows = [(_manifest(tmp_path), Sample(names[0], "eye_rgb", 0, "train")),
            (_manifest(tmp_path), Sample(names[1], "chest", 0, "train"))]
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # computed, written, read back
        images = ImageDataset(rows, tasks, resolution=8, channels=3, cache_dir=cache).materialize(progress=False).images
        assert images.shape == (2, 3, 8, 8)
        torch.testing.assert_close(images[0, :, 0, 0], torch.tensor([200 / 255, 0, 0]), atol=3e-4, rtol=0)
        gray = images[1, 0, 0, 0]  # the gray task reads the file gray (luma of red), in every channel
        assert 0.2 < gray < 0.25 and bool((images[1] == gray).all())
    as_gray = ImageDataset(rows, tasks, resolution=8, cache_dir=tmp_path / "cache").materialize(progress=False).images
    assert as_gray.shape == (2, 1, 8, 8) and bool((as_gray == gray).all())  # a gray model reads colour tasks gray


def _windowed(window: object) -> TaskRegistry:
    """The default tasks with ``head_ct`` read through ``window`` (as a tasks file would set it)."""
    return TaskRegistry(Task.from_dict({**t.to_dict(), "window": window}) if t.id == "head_ct" else t
                        for t in default_registry())


def test_the_tasks_window_applies_to_nifti_and_is_ignored_for_png(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hu = np.array([[-1000.0, 0.0, 40.0, 80.0]] * 4, dtype=np.float32).T  # (4, 4): rows of constant HU
    hu = hu.repeat(2, axis=0).repeat(2, axis=1)  # (8, 8): the smallest side medmoe scores
    nib.save(nib.Nifti1Image(hu[:, :, None], np.eye(4)), tmp_path / "ct.nii.gz")
    png = _png(tmp_path / "ct.png", np.full((8, 8), 51, dtype=np.uint8))
    manifest = _manifest(tmp_path, Sample("ct.nii.gz", "head_ct", 0, "train"), Sample(png, "head_ct", 0, "train"))
    ds = ImageDataset.from_manifests([manifest], _windowed("brain"), resolution=8)
    values = sorted(ds[0].image.unique().tolist())  # brain window: 0 HU -> 0, 40 -> 0.5, 80 -> 1
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0], atol=1e-3)
    torch.testing.assert_close(ds[1].image, torch.full((1, 8, 8), 0.2), atol=3e-4, rtol=0)
    calls = _count_reads(monkeypatch)
    for window in ("brain", "subdural", [40, 80], None):  # the preset and its values share an entry
        ImageDataset.from_manifests([manifest], _windowed(window), resolution=8, cache_dir=tmp_path / "cache")[0]
    assert len(calls) == 3


def test_a_tasks_window_is_resolved_checked_and_kept(tmp_path: Path) -> None:
    task = _windowed("Brain")["head_ct"]
    assert task.window == (40.0, 80.0) and Task.from_dict(task.to_dict()) == task
    assert Task.from_dict({k: v for k, v in task.to_dict().items() if k != "window"}).window is None  # old files
    for bad in ("no-such-preset", [40, 0], [1, 2, 3], 7):
        with pytest.raises(ConfigError, match="window"):
            _windowed(bad)


# --- masks ------------------------------------------------------------------------------------------


def test_any_pixel_rule_keeps_a_one_pixel_lesion() -> None:
    mask = np.zeros((64, 64), dtype=bool)
    mask[37, 5] = True
    small = resize_mask(mask, 16)
    assert small.shape == (1, 16, 16) and small.sum() == 1 and small[0, 9, 1] == 1


def test_boxes_are_rasterised_in_image_pixels() -> None:
    mask = rasterize_boxes("box:2,4,3,5; 18.5,0,10,1.2", (20, 20))
    expected = np.zeros((20, 20), dtype=bool)
    expected[4:9, 2:5] = True
    expected[0:2, 18:20] = True  # fractional box: every overlapped pixel; clipped to the image
    np.testing.assert_array_equal(mask, expected)
    for bad in ("box:1,2,3", "box:1,2,3,x", "box:1,2,0,4", "box:nan,1,2,2"):
        with pytest.raises(DatasetError, match="box"):
            rasterize_boxes(bad, (20, 20))


def test_box_and_multi_file_masks_in_the_dataset(tmp_path: Path) -> None:
    image = _png(tmp_path / "img.png", np.full((40, 40), 100, dtype=np.uint8))
    a, b = np.zeros((40, 40), dtype=np.uint8), np.zeros((40, 40), dtype=np.uint8)
    a[0:10, 0:10] = 255
    b[30:40, 30:40] = 255
    _png(tmp_path / "a_mask.png", a)
    _png(tmp_path / "b_mask.png", b)
    _png(tmp_path / "small_mask.png", np.zeros((20, 20), dtype=np.uint8))
    manifest = _manifest(
        tmp_path,
        Sample(image, "breast_us", 1, "test", mask="a_mask.png|b_mask.png"),
        Sample(image, "chest_xray", 1, "test", mask="box:0,0,20,40"),
        Sample(image, "breast_us", 1, "test", mask="small_mask.png"),
    )
    ds = ImageDataset.from_manifests([manifest], default_registry(), resolution=4)
    expected = torch.zeros(1, 4, 4)
    expected[0, 0, 0] = expected[0, 3, 3] = 1  # both lesion files, OR-ed
    torch.testing.assert_close(ds[0].mask, expected)
    expected = torch.zeros(1, 4, 4)
    expected[0, :, :2] = 1  # the box covers the left half
    torch.testing.assert_close(ds[1].mask, expected)
    with pytest.raises(DatasetError, match="small_mask.png' is 20x20 pixels but its image"):
        ds[2]
    without = ImageDataset.from_manifests([manifest], default_registry(), resolution=4, with_masks=False)
    assert not without[0].has_mask and without[0].mask.sum() == 0


# --- batches ----------------------------------------------------------------------------------------


def test_collate_dataloader_materialize_agree(synthetic: Manifest) -> None:
    ds = ImageDataset.from_manifests([synthetic], default_registry(), resolution=16)
    loaded = list(DataLoader(ds, batch_size=7, collate_fn=collate))
    assert [len(b) for b in loaded] == [7, 7, 7, 7, 5]
    first = loaded[0]
    assert first.images.shape == (7, 1, 16, 16) and first.masks.shape == (7, 1, 16, 16)
    assert first.has_mask.dtype == torch.bool and first.labels.dtype == torch.int64
    everything = ds.materialize(progress=False)
    assert len(everything) == len(ds) == 33
    torch.testing.assert_close(everything.indices, torch.arange(33))
    for name in ("images", "masks", "has_mask", "labels", "task_indices", "indices"):
        torch.testing.assert_close(getattr(everything, name), torch.cat([getattr(b, name) for b in loaded]))
    assert everything.labels.sum() == 9 and everything.has_mask.sum() == 9
    picked = everything[torch.tensor([3, 0])]
    assert isinstance(picked, Batch) and picked.indices.tolist() == [3, 0]
    torch.testing.assert_close(picked.images[1], ds[0].image)
    moved = everything[:4].to("cpu")
    assert len(moved) == 4 and moved.images.device.type == "cpu"


def test_materialize_with_worker_processes(synthetic: Manifest) -> None:
    ds = ImageDataset.from_manifests([synthetic], default_registry(), split="test", resolution=16)
    torch.testing.assert_close(ds.materialize(progress=False, workers=1).images,
                               ds.materialize(progress=False).images)


def test_split_and_flag_filters(synthetic: Manifest) -> None:
    flagged = Manifest(synthetic.root, [s.with_flag("dup_of_train") if s.split == "val" else s
                                        for s in synthetic.samples])
    tasks = default_registry()
    assert len(ImageDataset.from_manifests([flagged], tasks, split="val")) == 3
    assert len(ImageDataset.from_manifests([flagged], tasks, split="train")) == 15
    assert len(ImageDataset.from_manifests([flagged], tasks, exclude_flags=["dup_of_train"])) == 30
    with pytest.raises(DatasetError, match="no images with split='val'"):
        ImageDataset.from_manifests([flagged], tasks, split="val", exclude_flags=["dup_of_train"])


def test_registry_mismatches_are_clear_errors(synthetic: Manifest) -> None:
    with pytest.raises(DatasetError, match="task 'breast_us', which is not in the task registry"):
        ImageDataset.from_manifests([synthetic], default_registry().subset(["brain_mri", "head_ct"]))
    mixed = TaskRegistry([*default_registry(), Task("eye_rgb", "eye", "fundus", "Colour fundus.", channels=3)])
    entries = [(synthetic, synthetic.samples[0]), (synthetic, Sample("x.png", "eye_rgb", 0, "train"))]
    with pytest.raises(ConfigError, match="channels must be 1 .gray. or 3 .colour., not 2"):
        ImageDataset(entries, mixed, channels=2)
    with pytest.raises(DatasetError, match="no images"):
        ImageDataset([], default_registry())


# --- cache ------------------------------------------------------------------------------------------


def test_second_pass_reads_the_cache(synthetic: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_reads(monkeypatch)
    tasks = default_registry()
    uncached = ImageDataset.from_manifests([synthetic], tasks, split="test", resolution=16).materialize(progress=False)
    assert len(calls) == 15 + 9  # images, plus one mask file per abnormal image
    calls.clear()
    ds = ImageDataset.from_manifests([synthetic], tasks, split="test", resolution=16, cache_dir=tmp_path)
    first = ds.materialize(progress=False)
    assert len(calls) == 24
    assert len(list(tmp_path.rglob("*.npy"))) == 15
    calls.clear()
    again = ImageDataset.from_manifests([synthetic], tasks, split="test", resolution=16, cache_dir=tmp_path)
    second = again.materialize(progress=False)
    assert calls == []  # a new dataset object over the same cache: nothing decoded
    for batch in (first, second):  # cached pixels equal uncached ones exactly (float16 either way)
        torch.testing.assert_close(batch.images, uncached.images, atol=0, rtol=0)
        torch.testing.assert_close(batch.masks, uncached.masks, atol=0, rtol=0)


def test_changed_settings_or_content_miss_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    rng = np.random.default_rng(0)
    name = _png(data / "a.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))
    mask = np.zeros((24, 24), dtype=np.uint8)
    mask[:4, :4] = 255
    _png(data / "a_mask.png", mask)
    manifest = _manifest(data, Sample(name, "breast_us", 1, "test", mask="a_mask.png"))
    tasks = default_registry()
    calls = _count_reads(monkeypatch)

    def decoded(**kwargs: object) -> list[str]:
        calls.clear()
        ImageDataset.from_manifests([manifest], tasks, cache_dir=cache, **kwargs)[0]
        return [p.name for p in calls]

    assert decoded(resolution=8) == ["a.png", "a_mask.png"]
    assert decoded(resolution=8) == []
    assert decoded(resolution=12) == ["a.png", "a_mask.png"]  # another resolution
    assert decoded(resolution=8, with_masks=False) == ["a.png"]  # another mask setting
    assert decoded(resolution=8) == decoded(resolution=12) == []  # entries of all settings coexist
    mask[20:, 20:] = 255
    _png(data / "a_mask.png", mask)
    assert decoded(resolution=8) == ["a.png", "a_mask.png"]  # mask content changed
    _png(data / "a.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))
    assert decoded(resolution=8) == ["a.png", "a_mask.png"]  # image content changed
    assert decoded(resolution=8) == []
    masks = []
    for box in ("box:0,0,6,6", "box:18,18,6,6", "box:0,0,6,6"):  # another box specification
        manifest.samples[0] = Sample(name, "breast_us", 1, "test", mask=box)
        masks.append(ImageDataset.from_manifests([manifest], tasks, resolution=8, cache_dir=cache)[0].mask)
    assert [p.name for p in calls] == ["a.png", "a.png"]
    assert masks[0][0, 0, 0] == masks[1][0, 7, 7] == 1 and not torch.equal(masks[0], masks[1])
    torch.testing.assert_close(masks[0], masks[2])


def test_corrupt_cache_entries_are_recomputed(synthetic: Manifest, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = default_registry()
    ds = ImageDataset.from_manifests([synthetic], tasks, split="val", resolution=16, cache_dir=tmp_path)
    reference = ds.materialize(progress=False)
    entries = sorted(tmp_path.rglob("*.npy"))
    assert len(entries) == 3
    entries[0].write_bytes(entries[0].read_bytes()[:60])  # truncated
    entries[1].write_bytes(b"not a numpy file")
    np.save(entries[2], np.zeros((2, 8, 8), dtype=np.float16))  # wrong shape
    calls = _count_reads(monkeypatch)
    again = ImageDataset.from_manifests([synthetic], tasks, split="val", resolution=16, cache_dir=tmp_path)
    torch.testing.assert_close(again.materialize(progress=False).images, reference.images, atol=0, rtol=0)
    assert len(calls) == 3
    calls.clear()
    again.materialize(progress=False)
    assert calls == []  # rewritten entries are good again


# --- unreadable files -------------------------------------------------------------------------------


def test_unreadable_images_name_the_file_and_check_lists_them(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png", np.full((8, 8), 7, dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    manifest = _manifest(
        tmp_path,
        Sample(good, "head_ct", 0, "train"),
        Sample("broken.png", "head_ct", 0, "train"),
        Sample("missing.png", "head_ct", 0, "train"),
        Sample(good, "head_ct", 1, "test", mask="missing_mask.png"),
        Sample(good, "head_ct", 1, "test", mask="box:1,1,0,3"),
    )
    for cache_dir in (None, tmp_path / "cache"):
        ds = ImageDataset.from_manifests([manifest], default_registry(), resolution=8, cache_dir=cache_dir)
        assert ds[0].image.shape == (1, 8, 8)
        for index, name in ((1, "broken.png"), (2, "missing.png"), (3, "missing_mask.png")):
            with pytest.raises(ImageReadError, match=name):
                ds[index]
        failures = ds.check(progress=False)
        assert [p.name for p, _ in failures] == ["broken.png", "missing.png", "missing_mask.png", "good.png"]
        assert all(reason for _, reason in failures)
        assert "positive width" in failures[-1][1]
