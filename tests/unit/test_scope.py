"""The scope head's descriptors and stored kind, its lesion- and acquisition-tolerant references,
the acquisition changes themselves, and the scope limit's leave-one-out normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmoe.data.acquisition import ACQUISITION_KINDS, acquisition_shift
from medmoe.data.anomalies import synthesize_anomalies
from medmoe.data.synthetic import make_phantom
from medmoe.data.transforms import preprocess_image
from medmoe.engine.trust_fitting import (
    fit_scope,
    lesion_copies,
    reference_copies,
    reference_copy_inputs,
    scope_distances,
    selected_copies,
)
from medmoe.model.config import ModelConfig
from medmoe.trust.calibration import fit_calibration
from medmoe.trust.scope import DESCRIPTORS, ScopeHead, descriptor


def test_median_iqr_is_torch_quantile_and_ignores_a_minority_of_locations() -> None:
    features = torch.randn(3, 4, 5, 7)  # 35 locations: the quartiles fall between samples
    flat = features.flatten(2)
    q25, median, q75 = torch.quantile(flat, torch.tensor([0.25, 0.5, 0.75]), dim=2)
    torch.testing.assert_close(descriptor(features, "median_iqr"), torch.cat([median, q75 - q25], 1))
    torch.testing.assert_close(descriptor(features, "mean_std"), torch.cat([flat.mean(2), flat.std(2)], 1))
    lesion = features.clone()
    lesion[:, :, :2, :2] += 50.0  # 4 of 35 locations
    moved = {k: (descriptor(lesion, k) - descriptor(features, k)).abs().max().item() for k in DESCRIPTORS}
    assert moved["median_iqr"] < 0.1 * moved["mean_std"]
    with pytest.raises(ValueError, match="unknown scope descriptor"):
        descriptor(features, "max")


def test_a_head_keeps_its_descriptor_and_old_heads_read_as_mean_std() -> None:
    rng = np.random.default_rng(0)
    head = ScopeHead.fit([rng.normal(size=(20, 6)), rng.normal(size=(1, 6))], "mean_std")
    state = {k: v.clone() for k, v in head.state_dict().items()}
    assert ScopeHead.from_state(state).kind == "mean_std"
    del state["descriptor_code"]  # written before heads stored their descriptor
    assert ScopeHead.from_state(state).kind == "mean_std"
    robust = ScopeHead.fit([rng.normal(size=(20, 6))])
    assert ScopeHead.from_state(robust.state_dict()).kind == "median_iqr"
    features = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(head(features), ScopeHead.from_state(head.state_dict())(features))
    with pytest.raises(ValueError, match="cannot extend"):
        head.extended(robust)
    assert head.extended(head).mean.shape == (4, 6)


def test_the_scope_limit_is_normalised_leave_one_out() -> None:
    # two calibration normals per task at squared distances 1 and 9 (distances 1 and 3): normalised by
    # their own median (2) they would be 0.5 and 1.5; leave-one-out they are 1/3 and 3
    task_index = np.array([0, 0, 1, 1])
    distances = np.zeros((4, 2))
    distances[[0, 1], 0] = [1.0, 9.0]
    distances[[2, 3], 1] = [1.0, 9.0]
    calibration = fit_calibration(["a", "b"], np.zeros(4), task_index, distances, "validation normals")
    assert calibration.scope_scale == {"a": 2.0, "b": 2.0}  # a new image is normalised by the full median
    assert calibration.scope_limit == pytest.approx(np.quantile([1 / 3, 3, 1 / 3, 3], 0.99))


def _phantoms(task: str, n: int, seed: int, size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([preprocess_image(make_phantom(task, rng, size=size)[0], 1, size)
                                      for _ in range(n)]))


def test_lesion_copies_change_every_image_once_and_are_seeded() -> None:
    images = torch.cat([_phantoms("brain_mri", 4, 0), _phantoms("chest_xray", 1, 1)])  # a task of one image
    tasks = torch.tensor([0, 0, 0, 0, 1])
    before = images.clone()
    copies = lesion_copies(images, tasks)
    torch.testing.assert_close(images, before)  # the originals are untouched
    assert copies.shape == images.shape and copies.dtype == images.dtype
    assert float(copies.min()) >= 0.0 and float(copies.max()) <= 1.0
    changed = (copies - images).abs().flatten(1) > 1e-4
    share = changed.float().mean(1)
    assert bool((share > 0.005).all()) and bool((share < 0.4).all())  # one lesion of 1-20 % of the image
    torch.testing.assert_close(lesion_copies(images, tasks), copies)
    assert not torch.equal(lesion_copies(images, tasks, seed=2), copies)


def test_acquisition_changes_are_seeded_in_range_and_of_the_asked_kinds() -> None:
    images = _phantoms("brain_mri", 3, 0).numpy()
    before = images.copy()
    out = acquisition_shift(images, np.random.default_rng(0))
    np.testing.assert_array_equal(images, before)  # the originals are untouched
    assert out.shape == images.shape and out.dtype == np.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_array_equal(acquisition_shift(images, np.random.default_rng(0)), out)
    assert np.abs(out - images).mean() > 0.005  # every kind at once changes the image
    # gamma alone is a monotone intensity curve: the pixels keep their order
    gamma = acquisition_shift(images, np.random.default_rng(1), ("gamma",))
    for original, changed in zip(images, gamma, strict=True):
        order = np.argsort(original.ravel(), kind="stable")
        assert np.all(np.diff(changed.ravel()[order]) >= -1e-6)
    assert not np.allclose(gamma, images, atol=1e-3)
    with pytest.raises(ValueError, match="unknown acquisition changes"):
        acquisition_shift(images, np.random.default_rng(0), ("rotation",))
    assert set(ACQUISITION_KINDS) >= {"gamma", "noise", "geometry"}


def test_reference_copies_are_a_lesion_copy_then_an_acquisition_copy_of_each_normal() -> None:
    images = torch.cat([_phantoms("brain_mri", 4, 0), _phantoms("chest_xray", 2, 1)])
    tasks = torch.tensor([0, 0, 0, 0, 1, 1])
    copies = reference_copies(images, tasks)
    assert copies.shape == (12, *images.shape[1:])
    torch.testing.assert_close(copies[:6], lesion_copies(images, tasks))
    assert bool(((copies[6:] - images).abs().flatten(1).mean(1) > 1e-3).all())
    keep = tasks == 0  # the brain normals' copies, block by block
    torch.testing.assert_close(selected_copies(copies, keep), torch.cat([copies[:4], copies[6:10]]))


def test_reference_copies_keep_lesions_and_other_scanners_nearer_than_another_modality() -> None:
    # a head of brain MRI and chest X-ray phantoms (pixel model: the scope trunk is the pretrained one);
    # probes: held-out brain normals, the same with large synthetic lesions or acquisition changes of
    # other seeds than the references' copies, and head CTs
    model, config = torch.nn.Identity(), ModelConfig(resolution=64)
    train = torch.cat([_phantoms("brain_mri", 30, 0), _phantoms("chest_xray", 30, 1)])
    tasks = torch.arange(2).repeat_interleave(30)
    normal = _phantoms("brain_mri", 12, 5)
    probes = {"normal": normal, "head_ct": _phantoms("head_ct", 12, 6),
              "lesion": torch.from_numpy(synthesize_anomalies(normal.numpy(), np.random.default_rng(7),
                                                              area=(0.1, 0.2))[0]),
              "scanner": torch.from_numpy(acquisition_shift(normal.numpy(), np.random.default_rng(8)))}
    ratio = {}
    for name, copies in (("plain", None), ("tolerant", reference_copy_inputs(model, train, tasks))):
        head = fit_scope(model, config, train, tasks, 2, copy_inputs=copies)
        d = {k: np.sqrt(scope_distances(model, config, head, v)[:, 0]) for k, v in probes.items()}
        ratio[name] = {k: v / np.median(d["normal"]) for k, v in d.items()}
    # measured (median, largest × the normals' median): scanner 1.54, 1.91 -> 1.12, 1.35; lesion
    # 1.48, 1.81 -> 1.36, 1.69; head CT 1.61 -> 1.57
    assert np.median(ratio["tolerant"]["scanner"]) < 0.85 * np.median(ratio["plain"]["scanner"])
    assert ratio["tolerant"]["scanner"].max() < 0.85 * ratio["plain"]["scanner"].max()
    assert np.median(ratio["tolerant"]["lesion"]) < 0.96 * np.median(ratio["plain"]["lesion"])
    assert ratio["tolerant"]["lesion"].max() < 0.97 * ratio["plain"]["lesion"].max()
    assert np.median(ratio["tolerant"]["head_ct"]) > 1.4
    assert np.median(ratio["tolerant"]["head_ct"]) > max(np.median(ratio["tolerant"][k]) for k in ("lesion", "scanner"))
    with pytest.raises(ValueError, match="no whole number of copies"):
        fit_scope(model, config, train, tasks, 2, copy_inputs=train[:3])
