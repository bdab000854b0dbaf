"""feature_moe: the paper's mechanism on frozen trunk features (shapes, loss, temperature, routing,
prompt, ONNX parity, and a learning test on phantoms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine_fixtures import synthetic
from medmoe import Detector
from medmoe.api.export import MAP_ATOL, SCORE_ATOL, SCORE_RTOL, export_onnx
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.engine.config import load_config
from medmoe.engine.evaluate import collect, compute_metrics
from medmoe.engine.train import train
from medmoe.model.feature.branch import ERROR_MOMENTUM
from medmoe.model.feature.memory import gaussian_blur
from medmoe.model.feature.network import FeatureMoE, top_fraction_mean
from medmoe.model.registry import model_config


def small(**kw: object) -> FeatureMoE:
    torch.manual_seed(0)
    return FeatureMoE(model_config(dict(architecture="feature_moe", resolution=64, feature_width=16, **kw)))


def test_outputs_live_on_the_image_grid() -> None:
    model = small().eval()
    out = model(torch.rand(3, 1, 64, 64), torch.randn(3, 384))
    assert out.anomaly_map.shape == (3, 1, 64, 64) and out.u.shape == (3, 1, 64, 64)
    assert out.score.shape == (3,) and out.router_weights.shape == (3, 5) and out.x_hat is None
    assert torch.allclose(out.score, out.anomaly_map.flatten(1).mean(dim=1))  # §3.5: the mean of the map
    assert torch.allclose(out.router_weights.sum(dim=1), torch.ones(3))


def test_only_the_head_trains_and_every_head_parameter_gets_a_gradient() -> None:
    model = small().train()
    x = torch.rand(4, 1, 64, 64)
    feats = model.prepare(x)
    out = model.forward_prepared(feats, torch.randn(4, 384))
    model.loss(out, feats, torch.tensor([0, 1, 2, 3]), 1.0, 1.0).total.backward()
    assert all(p.grad is None for p in model.trunk.parameters())
    head = [(n, p) for n, p in model.named_parameters() if not n.startswith("trunk.")]
    assert head and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in head), \
        [n for n, p in head if p.grad is None or p.grad.abs().sum() == 0]


def test_loss_is_eq6_with_eq5_on_the_feature_grid() -> None:
    model = small().eval()
    feats = model.prepare(torch.rand(2, 1, 64, 64))
    out = model.forward_prepared(feats, torch.randn(2, 384))
    parts = model.loss(out, feats, torch.tensor([0, 1]), alpha=0.5, beta=2.0)
    ce = torch.nn.functional.cross_entropy(out.router_logits, torch.tensor([0, 1]))
    assert torch.allclose(parts.total, 0.5 * ce + 2.0 * out.reconstruction_loss)
    z = (feats - model.feature_mean.view(1, -1, 1, 1)) / model.feature_std.view(1, -1, 1, 1)
    b, _ = model.encoder(z)
    mixed = model.experts.mix(b, out.router_weights)
    e = model.distance(z, mixed[:, :-1]) / model.error_scale
    u = mixed[:, -1:]
    assert torch.allclose(out.reconstruction_loss, (e * torch.exp(-u**2) + u**2).mean(), rtol=1e-5)


def test_temperature_follows_the_training_error_quantile() -> None:
    model = small(error_quantile=0.5).train()
    feats = model.prepare(torch.rand(4, 1, 64, 64))
    text = torch.randn(4, 384)
    start = float(model.error_scale)
    for _ in range(200):
        model.forward_prepared(feats, text)
    with torch.no_grad():
        out = model.forward_prepared(feats, text)
    assert float(model.error_scale) != start
    # with the temperature at the median, about half of the (pre-discount) errors exceed 1
    raw = out.anomaly_map * torch.exp(out.u**2)
    assert 0.3 < float((raw > 1).float().mean()) < 0.7
    assert 0 < ERROR_MOMENTUM < 1


def test_prompt_changes_routing_and_no_prompt_ignores_it() -> None:
    model = small().eval()
    feats = model.prepare(torch.rand(2, 1, 64, 64))
    a = model.forward_prepared(feats, torch.randn(2, 384)).router_weights
    b = model.forward_prepared(feats, torch.randn(2, 384)).router_weights
    assert not torch.allclose(a, b)
    plain = small(prompt=False).eval()
    assert torch.equal(plain.forward_prepared(feats, None).score, plain.forward_prepared(feats, torch.randn(2, 384)).score)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_retrieval_experts_measure_distance_to_their_own_tasks_memory(distance: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from medmoe.model.feature.memory import patches

    model = small(feature_expert="retrieve", num_experts=3, top_k=3, memory_distance=distance).eval()
    train = model.prepare(torch.rand(6, 1, 64, 64))
    tasks = torch.tensor([0, 0, 1, 1, 0, 1])
    model.fit_data(train, tasks, None, seed=0)
    assert model.memory_counts.tolist()[2] == model.memory_counts.tolist()[0]  # expert 2 remembers task 0
    query = model.prepare(torch.rand(2, 1, 64, 64))
    errors = model.retrieval_errors(query)  # (B, N, h, w)
    q = patches(query)  # the trunk's scale
    for k, bank in enumerate(model.memory.split(model.memory_counts.tolist())):
        if distance == "cosine":  # a memory of unit-length patches; the error is 1 − the best cosine similarity
            assert torch.allclose(bank.norm(dim=1), torch.ones(len(bank)), atol=1e-5)
            brute = 1 - (torch.nn.functional.normalize(q, dim=-1) @ bank.T).max(dim=-1).values
        else:
            brute = torch.cdist(q, bank).min(dim=-1).values.square() / query.shape[1]
        assert torch.allclose(errors[:, k].flatten(1), brute, rtol=1e-3, atol=1e-4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    fresh = small(feature_expert="retrieve", num_experts=3, top_k=3, memory_distance=distance).eval()
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    text = torch.randn(2, 384)
    assert torch.equal(model.forward_prepared(query, text).score, fresh.forward_prepared(query, text).score)


@pytest.mark.parametrize("weight", [0.5, 0.8])
def test_hybrid_mixes_the_discounted_reconstruction_and_the_scaled_retrieval_error(weight: float) -> None:
    model = small(feature_expert="hybrid", score_top_fraction=0.0, hybrid_weight=weight)
    train = model.prepare(torch.rand(10, 1, 64, 64))
    model.fit_data(train, torch.arange(5).repeat(2), None, seed=0)
    assert float(model.retrieval_scale) > 0 and len(model.memory) > 0
    model.eval()
    query, text = model.prepare(torch.rand(2, 1, 64, 64)), torch.randn(2, 384)
    out = model.forward_prepared(query, text)
    reconstruct_only = small(feature_expert="reconstruct", score_top_fraction=0.0)
    reconstruct_only.load_state_dict(model.state_dict(), strict=False)
    reconstruct_only.eval()
    rec = reconstruct_only.forward_prepared(query, text).anomaly_map
    ret = torch.einsum("bn,bnhw->bhw", out.router_weights, model.retrieval_errors(query)).unsqueeze(1)
    ret = torch.nn.functional.interpolate(ret / model.retrieval_scale, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(out.anomaly_map, (1 - weight) * rec + weight * ret, rtol=1e-4, atol=1e-6)


def test_map_sigma_smooths_the_map_the_score_is_read_from() -> None:
    smoothed = small(map_sigma=2.0, score_top_fraction=0.1).eval()
    plain = small(score_top_fraction=0.1).eval()
    plain.load_state_dict(smoothed.state_dict())
    query, text = smoothed.prepare(torch.rand(2, 1, 64, 64)), torch.randn(2, 384)
    out, raw = smoothed.forward_prepared(query, text), plain.forward_prepared(query, text).anomaly_map
    assert torch.allclose(out.anomaly_map, gaussian_blur(raw, 2.0), atol=1e-6)
    assert not torch.allclose(out.anomaly_map, raw, atol=1e-4)
    assert torch.allclose(out.score, top_fraction_mean(out.anomaly_map, 0.1))


def test_top_fraction_score_is_the_mean_of_the_largest_values() -> None:
    amap = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10)
    assert float(top_fraction_mean(amap, 0.05)) == pytest.approx(np.mean([95, 96, 97, 98, 99]))
    assert float(top_fraction_mean(amap, 0.0)) == pytest.approx(49.5)


def test_onnx_export_with_the_trunk_matches_torch(feature_run: Path, phantoms: Path, tmp_path: Path) -> None:
    result = export_onnx(feature_run, tmp_path / "feature.onnx")
    assert result.max_score_diff <= SCORE_ATOL + SCORE_RTOL and result.max_map_diff <= MAP_ATOL
    files = sorted((phantoms / "brain_mri" / "test").rglob("*.png"))
    ours = Detector.load(result.onnx_path, backend="onnx").predict_batch(files, task="brain_mri")
    theirs = Detector.load(feature_run).predict_batch(files, task="brain_mri")
    np.testing.assert_allclose([r.score for r in ours], [r.score for r in theirs], rtol=SCORE_RTOL, atol=SCORE_ATOL)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=MAP_ATOL * max(1.0, b.anomaly_map.max()))


#: Every task's test AUROC must reach this (chance 0.5; a random scorer on 20 + 20 images stays below
#: it with probability ~0.99).
MIN_AUROC = 0.6


@pytest.mark.slow
def test_short_training_on_trunk_features_detects_phantom_lesions(tmp_path: Path) -> None:
    data = synthetic(tmp_path / "data", n_train=60, n_test=20)
    config = load_config("cpu-feat", ["model.resolution=64", "train.epochs=10", "train.batch_size=32",
                                      f"data.cache_dir={tmp_path / 'cache'}"])  # the default profile
    train(config, [data], tmp_path / "run", progress=False)
    assert (tmp_path / "cache" / "features").is_dir()  # trunk features were cached
    checkpoint = load_checkpoint(tmp_path / "run")
    metrics = compute_metrics(checkpoint, collect(checkpoint, [data], cache_dir=tmp_path / "cache", progress=False))
    auroc = {task: m.primary.auroc for task, m in metrics.tasks.items()}
    assert len(auroc) == 5 and all(v >= MIN_AUROC for v in auroc.values()), str(auroc)
    assert all(m.routing_accuracy == 1.0 for m in metrics.tasks.values())
