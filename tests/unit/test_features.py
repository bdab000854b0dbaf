"""The trunk-feature cache (hit, miss, invalidation) and the feature peers."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from medmoe.engine.features import feature_key, prepared_inputs
from medmoe.errors import ConfigError
from medmoe.model.baselines.patchcore import FeatureNN, PatchCore
from medmoe.model.config import ModelConfig
from medmoe.model.feature import memory
from medmoe.model.feature.memory import (
    FAR,
    greedy_coreset,
    nearest_distance,
    patch_errors,
    patches,
    windowed_nearest_distance,
)
from medmoe.model.feature.network import FeatureMoE
from medmoe.model.registry import model_config


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


def test_a_two_stage_coreset_keeps_distinct_rows_and_covers_every_cluster() -> None:
    # 20 clusters of 1000 consecutive rows (as an image's patches are), over 5 blocks of 4096 rows; the first
    # stage keeps 10 × 20 candidates
    centers = 10 * torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    points = (centers[:, None] + 0.1 * torch.randn(20, 1000, 8)).flatten(0, 1)
    chosen = greedy_coreset(points, 20, seed=1, single_stage_work=0)
    assert len(chosen) == len(set(chosen.tolist())) == 20
    nearest_center = torch.cdist(points[chosen], centers).argmin(dim=1)
    assert sorted(nearest_center.tolist()) == list(range(20))  # one row from each cluster


def test_nearest_distance_matches_brute_force_and_honours_the_penalty() -> None:
    q, bank = torch.randn(2, 37, 5), torch.randn(11, 5)
    expected = torch.cdist(q, bank).min(dim=-1).values
    assert torch.allclose(nearest_distance(q, bank), expected, atol=1e-5)
    penalty = torch.zeros(2, 11)
    penalty[:, :10] = FAR  # only the last row counts
    assert torch.allclose(nearest_distance(q, bank, penalty), torch.cdist(q, bank[10:]).squeeze(-1), atol=1e-4)


def test_a_bank_searched_in_chunks_gives_what_one_search_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    q, bank = torch.randn(3, 20, 6), torch.randn(50, 6)
    penalty = torch.zeros(3, 50)
    penalty[0, 7:] = FAR  # image 0 may use rows 0-6 only: its nearest row sits in the first chunk
    whole = nearest_distance(q, bank, penalty, chunk=len(bank))
    assert torch.allclose(nearest_distance(q, bank, penalty, chunk=4), whole)
    products: list[int] = []
    original_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(memory, "PRODUCT_FLOATS", 3 * 20 * 8)  # the default chunk: 8 rows per block
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: products.append(b.shape[-1]) or original_matmul(a, b))
    assert torch.allclose(nearest_distance(q, bank, penalty), whole)
    assert products == [8, 8, 8, 8, 8, 8, 2]
    assert torch.allclose(whole[0], torch.cdist(q[0], bank[:7]).min(dim=-1).values, atol=1e-5)


def test_patch_errors_are_the_mean_squared_difference_or_one_minus_the_cosine() -> None:
    features, bank_features = torch.randn(2, 6, 4, 4), torch.randn(3, 6, 4, 4)
    raw_query, raw_bank = patches(features), patches(bank_features).flatten(0, 1)  # (2, 16, 6), (48, 6)
    euclidean = patch_errors(features, [raw_bank], "euclidean")[:, 0]
    assert torch.allclose(euclidean.flatten(1), torch.cdist(raw_query, raw_bank).min(dim=-1).values.square() / 6,
                          atol=1e-5)
    cosine = patch_errors(features, [patches(bank_features, "cosine").flatten(0, 1)], "cosine")[:, 0]
    similarity = torch.nn.functional.cosine_similarity(raw_query[:, :, None], raw_bank[None, None], dim=-1)
    assert torch.allclose(cosine.flatten(1), 1 - similarity.max(dim=-1).values, atol=1e-5)


def _memory_model(cls: type, prompt: bool, **settings: object) -> PatchCore | FeatureNN:
    config = model_config(dict(architecture="patchcore" if cls is PatchCore else "feature_nn", resolution=32,
                               hallucination=False, prompt=prompt, trunk_stages=[3], **settings))
    return cls(config, pretrained=False).eval()


@pytest.mark.parametrize("cls", [PatchCore, FeatureNN])
def test_a_cosine_memory_reads_a_patchs_direction_not_its_length(cls: type) -> None:
    train = torch.rand(4, 80, 4, 4) + 0.1
    tasks, embeddings = torch.zeros(4, dtype=torch.long), torch.eye(1, 384)
    brighter = 3 * train[:1]  # a training image at three times its feature length
    every_patch = {"memory_coverage": 1.0} if cls is PatchCore else {}
    scores = {}
    for distance in ("euclidean", "cosine"):
        model = _memory_model(cls, True, memory_distance=distance, **every_patch)
        model.fit_data(train, tasks, embeddings, seed=0)
        scores[distance] = float(model.forward_prepared(brighter, embeddings).score[0])
    assert scores["cosine"] == pytest.approx(0.0, abs=1e-5) and scores["euclidean"] > 1.0


def test_windowed_search_finds_the_nearest_patch_near_each_position() -> None:
    queries, memory = torch.randn(2, 5, 6, 4), torch.randn(3, 5, 6, 4)
    for radius in (0, 1, 2):
        expected = torch.empty(2, 5, 6)
        for b, i, j in itertools.product(range(2), range(5), range(6)):
            near = memory[:, max(0, i - radius):i + radius + 1, max(0, j - radius):j + radius + 1].reshape(-1, 4)
            expected[b, i, j] = (near - queries[b, i, j]).norm(dim=1).min()
        assert torch.allclose(windowed_nearest_distance(queries, memory, radius), expected, atol=1e-4)


@pytest.mark.parametrize("prompt", [True, False])
def test_a_position_aware_patchcore_flags_normal_tissue_in_the_wrong_place(prompt: bool) -> None:
    train = torch.rand(6, 80, 8, 8) * 0.1
    train[:, :, :4] += torch.linspace(0, 2, 80)[None, :, None, None]  # every image: the top half is "bone"
    tasks, embeddings = torch.tensor([0, 0, 0, 1, 1, 1]), torch.eye(2, 384)
    flipped = train[:1].flip(2)  # bone at the bottom: every patch exists in the memory, but elsewhere
    scores = {}
    for window in (-1, 1):
        model = _memory_model(PatchCore, prompt, memory_coverage=1.0, memory_window=window)
        model.fit_data(train, tasks, embeddings if prompt else None, seed=0)
        out = model.forward_prepared(torch.cat([train[:1], flipped]), embeddings[[0, 0]] if prompt else None)
        scores[window] = out.score.tolist()
    assert scores[-1][1] < 0.5 < scores[1][1]  # anywhere, a flipped image looks normal; by position, it does not
    assert scores[1][0] < 0.05  # a training image finds itself (up to rounding in ‖q‖² − 2 q·m + ‖m‖²)


def test_a_position_aware_patchcore_searches_each_rows_bank_as_its_exported_graph_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    train, tasks, embeddings = torch.randn(6, 16, 5, 5), torch.tensor([0, 0, 0, 1, 1, 1]), torch.eye(2, 384)
    model = _memory_model(PatchCore, True, memory_coverage=1.0, memory_window=1)
    model.fit_data(train, tasks, embeddings, seed=0)
    queries, prompts = torch.randn(4, 16, 5, 5), embeddings[[1, 0, 0, 1]]  # both tasks in one batch
    own_bank = model.forward_prepared(queries, prompts).score
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)  # the graph export traces: every bank, masked
    every_bank = model.forward_prepared(queries, prompts).score
    assert torch.allclose(own_bank, every_bank)
    assert not torch.allclose(own_bank, model.forward_prepared(queries, embeddings[[0, 1, 1, 0]]).score)


def test_patchcore_keeps_the_share_of_patches_it_is_told() -> None:
    train, tasks = torch.randn(4, 80, 8, 8), torch.zeros(4, dtype=torch.long)
    for coverage, kept in ((1.0, 4 * 64), (0.25, 64)):
        model = _memory_model(PatchCore, False, memory_coverage=coverage)
        model.fit_data(train, tasks, None, seed=0)
        assert len(model.memory) == kept
    for bad in ({"memory_coverage": 0.0}, {"memory_coverage": 1.5}, {"memory_distance": "manhattan"},
                {"memory_window": -2}, {"memory_window": 1}):  # a window needs every patch
        with pytest.raises(ConfigError, match="memory_coverage" if bad == {"memory_window": 1} else next(iter(bad))):
            _memory_model(PatchCore, False, **bad)


@pytest.mark.parametrize("prompt", [True, False])
def test_patchcore_scores_and_localises_an_outlier(prompt: bool) -> None:
    torch.manual_seed(0)
    model = _memory_model(PatchCore, prompt)
    train = torch.randn(20, 80, 8, 8) * 0.1
    tasks = torch.tensor([0] * 10 + [1] * 10)
    embeddings = torch.eye(2, 384)
    model.fit_data(train, tasks, embeddings if prompt else None, seed=0)
    assert set(model.memory_task.tolist()) == ({0, 1} if prompt else {0})
    test = torch.randn(4, 80, 8, 8) * 0.1
    test[1, :, 2:4, 2:4] += 3.0  # a local anomaly
    out = model.forward_prepared(test, embeddings[[0, 0, 1, 1]] if prompt else None)
    assert int(out.score.argmax()) == 1 and out.anomaly_map.shape == (4, 1, 32, 32)
    peak = int(out.anomaly_map[1, 0].flatten().argmax())
    assert 4 <= peak // 32 <= 19 and 4 <= peak % 32 <= 19  # near the anomalous patch


def test_per_task_memory_follows_the_prompt() -> None:
    model = _memory_model(FeatureNN, prompt=True)
    train = torch.cat([torch.zeros(5, 80, 4, 4), torch.ones(5, 80, 4, 4)])
    model.fit_data(train, torch.tensor([0] * 5 + [1] * 5), torch.eye(2, 384), seed=0)
    image = torch.zeros(1, 80, 4, 4)  # like task 0's normals, unlike task 1's
    own = model.forward_prepared(image, torch.eye(2, 384)[:1]).score
    other = model.forward_prepared(image, torch.eye(2, 384)[1:]).score
    assert float(own) == pytest.approx(0.0, abs=1e-3) and float(other) == pytest.approx(80**0.5, rel=1e-3)


def test_memory_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = _memory_model(PatchCore, prompt=True)
    model.fit_data(torch.randn(6, 80, 4, 4), torch.tensor([0, 0, 0, 1, 1, 1]), torch.eye(2, 384), seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    fresh = _memory_model(PatchCore, prompt=True)
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    x = torch.randn(2, 80, 4, 4)
    assert torch.equal(model.forward_prepared(x, torch.eye(2, 384)).score, fresh.forward_prepared(x, torch.eye(2, 384)).score)


def test_an_image_scores_the_same_from_the_cache_and_computed_now(tmp_path: Path) -> None:
    from medmoe.engine.inference import predict

    torch.manual_seed(0)
    model = _memory_model(PatchCore, prompt=False)
    images = torch.rand(6, 1, 32, 32)
    cached = prepared_inputs(model, images, cache_dir=tmp_path, progress=False)
    model.fit_data(cached, torch.zeros(6, dtype=torch.long), None, seed=0)
    now = torch.rand(3, 1, 32, 32)
    from_cache = predict(model, prepared_inputs(model, now, cache_dir=tmp_path, progress=False), None, prepared=True)
    assert torch.equal(torch.from_numpy(predict(model, now, None).score), torch.from_numpy(from_cache.score))
    unrounded = model.forward_prepared(model.prepare(now)).score  # what forward gave before the rounding
    assert not torch.equal(unrounded, torch.from_numpy(from_cache.score))
