"""Synthetic phantoms: deterministic, varied, task-specific, with masks exactly where lesions are."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmoe.data.manifest import Sample, read_manifest
from medmoe.data.sources import prepare_source
from medmoe.data.synthetic import PHANTOMS, make_phantom, write_synthetic_dataset
from medmoe.errors import ConfigError
from medmoe.tasks import default_registry

TASKS = list(PHANTOMS)


def test_every_default_task_has_a_phantom() -> None:
    assert TASKS == default_registry().ids


@pytest.mark.parametrize("task", TASKS)
def test_phantom_shape_range_and_determinism(task: str) -> None:
    image, mask = make_phantom(task, np.random.default_rng(3), size=96, abnormal=True)
    again, again_mask = make_phantom(task, np.random.default_rng(3), size=96, abnormal=True)
    assert image.shape == mask.shape == (96, 96)
    assert image.dtype == np.float32 and mask.dtype == bool
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.05  # has structure, not a flat field
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, again_mask)


@pytest.mark.parametrize("task", TASKS)
def test_normals_vary(task: str) -> None:
    images = [make_phantom(task, np.random.default_rng(seed), size=64)[0] for seed in range(4)]
    for a, b in combinations(images, 2):
        assert np.abs(a - b).mean() > 0.01


@pytest.mark.parametrize("task", TASKS)
def test_masks_mark_the_lesion_and_only_it(task: str) -> None:
    areas = []
    for seed in range(8):
        normal, normal_mask = make_phantom(task, np.random.default_rng(seed), size=64)
        abnormal, mask = make_phantom(task, np.random.default_rng(seed), size=64, abnormal=True)
        assert not normal_mask.any()
        assert mask.any()
        # Same generator state: the abnormal image is its normal twin plus the lesion, so the
        # change concentrates inside the mask.
        diff = np.abs(abnormal - normal)
        assert diff[mask].mean() > 0.02
        assert diff[mask].mean() > 5 * diff[~mask].mean()
        areas.append(mask.mean())
    # Lesion sizes vary (some small, some large), so detection is not one fixed pattern.
    assert np.std(areas) / np.mean(areas) > 0.2


def test_tasks_look_different() -> None:
    means = {t: np.mean([make_phantom(t, np.random.default_rng(s), size=64)[0] for s in range(6)], axis=0)
             for t in TASKS}
    for a, b in combinations(TASKS, 2):
        assert np.abs(means[a] - means[b]).mean() > 0.05, (a, b)


def test_unknown_task_and_tiny_size_are_rejected() -> None:
    with pytest.raises(ConfigError, match="knee_mri"):
        make_phantom("knee_mri", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="at least 32"):
        make_phantom("fundus", np.random.default_rng(0), size=16)
    with pytest.raises(ConfigError, match="knee_mri"):
        write_synthetic_dataset("unused", tasks=["knee_mri"])


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_dataset_layout_manifest_and_masks(tmp_path: Path) -> None:
    manifest = write_synthetic_dataset(tmp_path, n_train=20, n_test_normal=3, n_test_abnormal=4, size=48,
                                       seed=5, tasks=["brain_mri", "fundus"])
    assert manifest.meta["synthetic"] == "true"
    assert read_manifest(tmp_path / "manifest.csv") == manifest
    for task in ("brain_mri", "fundus"):
        rows = [s for s in manifest.samples if s.task == task]
        assert sum(s.split == "val" for s in rows) == 2  # 10 % of 20 training normals
        assert sum(s.split == "train" for s in rows) == 18
        assert all(s.label == 0 and s.path.startswith(f"{task}/train/normal/")
                   for s in rows if s.split in ("train", "val"))
        assert sum(s.split == "test" and s.label == 0 for s in rows) == 3
        abnormal = [s for s in rows if s.label == 1]
        assert len(abnormal) == 4
        for s in rows:
            image = np.asarray(Image.open(manifest.resolve(s.path)))
            assert image.shape == (48, 48) and image.dtype == np.uint8
            assert bool(s.mask) == bool(s.label)
            if s.mask:
                assert s.path.startswith(f"{task}/test/abnormal/") and s.mask.startswith(f"{task}/masks/")
                mask = np.asarray(Image.open(manifest.resolve(s.mask)))
                assert mask.shape == (48, 48) and set(np.unique(mask)) == {0, 255}


def test_dataset_is_deterministic_per_seed(tmp_path: Path) -> None:
    kwargs = {"n_train": 4, "n_test_normal": 2, "n_test_abnormal": 2, "size": 40}
    write_synthetic_dataset(tmp_path / "a", seed=1, **kwargs)
    write_synthetic_dataset(tmp_path / "b", seed=1, **kwargs)
    write_synthetic_dataset(tmp_path / "c", seed=2, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 5 * (4 + 2 + 2 + 2)  # images + one mask per abnormal image
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if "/masks/" not in k)
    manifest_a = read_manifest(tmp_path / "a" / "manifest.csv")
    manifest_b = read_manifest(tmp_path / "b" / "manifest.csv")
    assert manifest_a.samples == manifest_b.samples


def test_an_image_does_not_depend_on_the_counts(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "small", n_train=2, n_test_normal=1, n_test_abnormal=1, size=40,
                            tasks=["head_ct"])
    write_synthetic_dataset(tmp_path / "large", n_train=5, n_test_normal=3, n_test_abnormal=2, size=40,
                            tasks=["chest_xray", "head_ct"])
    small, large = _files(tmp_path / "small"), _files(tmp_path / "large")
    assert small.items() <= large.items()


def test_each_task_folder_is_a_generic_folder_layout(tmp_path: Path) -> None:
    manifest = write_synthetic_dataset(tmp_path, n_train=5, n_test_normal=2, n_test_abnormal=3, size=40,
                                       tasks=["breast_us"])
    prepared = prepare_source("folder", tmp_path / "breast_us", task="breast_us")

    def rows(samples: list[Sample], prefix: str) -> set[tuple[str, int, str, str]]:
        return {(prefix + s.path, s.label, "test" if s.split == "test" else "train/val", prefix + s.mask if s.mask
                 else "") for s in samples}

    assert rows(prepared.samples, "breast_us/") == rows(manifest.samples, "")
