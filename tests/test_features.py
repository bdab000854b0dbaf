"""The trunk-feature cache (hit, miss, invalidation) and the feature peers."""

from __future__ import annotations

from pathlib import Path

import torch

from medmoe.baselines.patchcore import FeatureNN, PatchCore, greedy_coreset, nearest_distance
from medmoe.engine.features import feature_key, prepared_inputs
from medmoe.model.config import ModelConfig
from medmoe.model.feature_moe import FeatureMoE


class CountingTrunk(torch.nn.Module):
    """A stand-in frozen part that counts how many images it has seen."""

    def __init__(self, identity: str = "t1") -> None:
        super().__init__()
        self.seen = 0
        self.identity = identity

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return torch.nn.functional.avg_pool2d(x, 4).repeat(1, 3, 1, 1)

    def frozen_identity(self) -> str:
        return self.identity


def test_cache_hits_after_the_first_pass_and_gives_identical_features(tmp_path: Path) -> None:
    images = torch.rand(5, 1, 16, 16)
    model = CountingTrunk()
    first = prepared_inputs(model, images, cache_dir=tmp_path, progress=False)
    assert model.seen == 5 and first.shape == (5, 3, 4, 4)
    second = prepared_inputs(model, images, cache_dir=tmp_path, progress=False)
    assert model.seen == 5  # all hits
    assert torch.equal(first, second)
    uncached = prepared_inputs(CountingTrunk(), images, cache_dir=None, progress=False)
    assert torch.equal(first, uncached)  # float16 rounding either way


def test_cache_misses_for_a_changed_image_or_trunk(tmp_path: Path) -> None:
    images = torch.rand(4, 1, 16, 16)
    model = CountingTrunk()
    prepared_inputs(model, images, cache_dir=tmp_path, progress=False)
    edited = images.clone()
    edited[2, 0, 3, 3] += 0.25
    prepared_inputs(model, edited, cache_dir=tmp_path, progress=False)
    assert model.seen == 5  # only the edited image was recomputed
    other = CountingTrunk(identity="t2")
    prepared_inputs(other, images, cache_dir=tmp_path, progress=False)
    assert other.seen == 4  # another trunk or stages: every entry misses
    assert feature_key(images[0], "t1") != feature_key(images[0], "t2")
    assert feature_key(images[0], "t1") != feature_key(images[0, :, :8, :8], "t1")


def test_corrupt_cache_entry_is_recomputed(tmp_path: Path) -> None:
    images = torch.rand(2, 1, 16, 16)
    model = CountingTrunk()
    reference = prepared_inputs(model, images, cache_dir=tmp_path, progress=False)
    for entry in (tmp_path / "features").rglob("*.npy"):
        entry.write_bytes(b"not a numpy file")
    again = prepared_inputs(model, images, cache_dir=tmp_path, progress=False)
    assert model.seen == 4 and torch.equal(reference, again)


def test_pixel_models_get_their_images_back(tmp_path: Path) -> None:
    from medmoe.model.registry import create_model

    images = torch.rand(3, 1, 64, 64)
    out = prepared_inputs(create_model(ModelConfig()), images, cache_dir=tmp_path, progress=False)
    assert out is images and not (tmp_path / "features").exists()


def test_feature_moe_identity_names_trunk_and_stages() -> None:
    a = FeatureMoE(ModelConfig(architecture="feature_moe", trunk_stages=(2, 4)), pretrained=False)
    b = FeatureMoE(ModelConfig(architecture="feature_moe", trunk_stages=(1, 3)), pretrained=False)
    assert a.frozen_identity() != b.frozen_identity()


def test_greedy_coreset_covers_every_cluster() -> None:
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = (centers[:, None] + 0.1 * torch.randn(4, 50, 2)).flatten(0, 1)
    chosen = greedy_coreset(points, 4, seed=1)
    assert sorted((points[chosen] / 10).round().abs().tolist()) == sorted(centers.div(10).tolist())


def test_nearest_distance_matches_brute_force() -> None:
    q, bank = torch.randn(37, 5), torch.randn(11, 5)
    expected = torch.cdist(q, bank).min(dim=1).values
    assert torch.allclose(nearest_distance(q, bank, chunk=8), expected, atol=1e-5)


def test_patchcore_and_feature_nn_score_an_outlier_highest() -> None:
    torch.manual_seed(0)
    train = torch.randn(20, 6, 8, 8) * 0.1
    tasks = torch.tensor([0] * 10 + [1] * 10)
    test = torch.randn(4, 6, 8, 8) * 0.1
    test[1, :, 2:4, 2:4] += 3.0  # a local anomaly
    test_tasks = torch.tensor([0, 0, 1, 1])
    for per_task in (True, False):
        scores, maps = PatchCore(0.5, per_task=per_task, resolution=32).fit(train, tasks).score(test, test_tasks)
        assert int(scores.argmax()) == 1 and maps.shape == (4, 1, 32, 32)
        peak = maps[1, 0].flatten().argmax()
        assert 4 <= int(peak // 32) <= 19 and 4 <= int(peak % 32) <= 19  # near the anomalous patch
    pooled = FeatureNN().fit(train, tasks).score(test, test_tasks)
    assert int(pooled.argmax()) == 1
