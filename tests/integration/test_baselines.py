"""Baselines (AE, AE-U, MemAE): registry, shapes, scoring, MemAE memory, and training via the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine_fixtures import fast_config, synthetic
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.engine.evaluate import collect, compute_metrics
from medmoe.engine.train import train
from medmoe.errors import ConfigError
from medmoe.model import ARCHITECTURES, ModelConfig, create_model
from medmoe.model.baselines import AutoEncoder, MemAE, Memory, attention_entropy, hard_shrink
from medmoe.model.baselines.memae import ENTROPY_WEIGHT, MEMORY_SLOTS, SHRINK_THRESHOLD
from medmoe.model.registry import architecture, model_config

BASELINES = {name: architecture(name).fixes["hallucination"] for name in ("ae", "ae_u", "memae")}
"""name -> whether it has the hallucination head (its registry entry says)."""


def _config(name: str, **kw) -> ModelConfig:
    return model_config(dict(architecture=name, **architecture(name).fixes, resolution=32, fc_width=64, **kw))


def test_baselines_are_registered_by_name() -> None:
    create_model(_config("ae"))
    assert {"pixel_moe", "feature_moe", "ae", "ae_u", "memae", "patchcore", "feature_nn"} <= set(ARCHITECTURES)
    assert type(create_model(_config("ae"))) is AutoEncoder
    assert type(create_model(_config("ae_u"))) is AutoEncoder
    assert type(create_model(_config("memae"))) is MemAE


@pytest.mark.parametrize("name", list(BASELINES))
def test_output_shapes_and_no_router(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(_config(name, in_channels=2))
    x = torch.rand(5, 2, 32, 32)
    out = model(x, None)
    assert out.x_hat.shape == (5, 2, 32, 32)
    assert out.anomaly_map.shape == (5, 1, 32, 32)
    assert out.score.shape == (5,)
    assert out.features.shape == (5, 16)
    assert out.router_weights is None and out.router_logits is None
    assert (out.u is not None) == BASELINES[name]
    assert (out.aux_loss is not None) == (name == "memae")
    assert (out.score >= 0).all()


def test_ae_u_scores_with_the_papers_map_and_ae_with_squared_error() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32)
    ae_u = create_model(_config("ae_u")).eval()
    out = ae_u(x)
    z = 2 * x - 1  # the default [-1, 1] model range
    expected = ((z - out.x_hat).square() * torch.exp(-out.u.square())).flatten(1).mean(1)
    torch.testing.assert_close(out.score, expected)
    ae = create_model(_config("ae")).eval()
    out = ae(x)
    torch.testing.assert_close(out.score, (z - out.x_hat).square().flatten(1).mean(1))


@pytest.mark.parametrize("name", [name for name, entry in ARCHITECTURES.items() if entry.fixes])
def test_every_fixed_setting_is_refused_with_another_value(name: str) -> None:
    fixes = architecture(name).fixes
    for key, value in fixes.items():
        with pytest.raises(ConfigError, match=rf"architecture '{name}' needs model\.{key}: {str(value).lower()}"):
            create_model(ModelConfig(architecture=name, **{**fixes, key: not value}))
    assert set(architecture(name).overrides()) == {f"model.architecture={name}",
                                                   *(f"model.{k}={str(v).lower()}" for k, v in fixes.items())}


def test_hard_shrink_zeroes_small_weights_and_renormalises() -> None:
    weights = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    out = hard_shrink(weights, 0.1)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], weights[1], atol=1e-5, rtol=1e-5)
    assert torch.all(hard_shrink(weights, 0.6) == 0)  # nothing above the threshold: an all-zero row


def test_memory_attention_is_sparse_sums_to_one_and_reads_the_items() -> None:
    torch.manual_seed(0)
    memory = Memory(MEMORY_SLOTS, 16, SHRINK_THRESHOLD)
    z = 3 * torch.randn(64, 16)
    z_hat, weights = memory(z)
    assert weights.shape == (64, MEMORY_SLOTS)
    torch.testing.assert_close(weights.sum(1), torch.ones(64))
    assert (weights == 0).sum(1).min() > 0  # every row loses at least one item
    assert (weights[weights > 0] > SHRINK_THRESHOLD).all()
    torch.testing.assert_close(z_hat, weights @ memory.items)
    z_hat.sum().backward()
    assert memory.items.grad is not None and memory.items.grad.abs().sum() > 0


def test_attention_entropy() -> None:
    n = 8
    assert math.isclose(attention_entropy(torch.full((2, n), 1 / n)).item(), math.log(n), rel_tol=1e-5)
    assert attention_entropy(torch.eye(n)[:3]).item() == pytest.approx(0.0, abs=1e-6)


def test_memae_aux_loss_is_the_weighted_entropy() -> None:
    torch.manual_seed(0)
    model = create_model(_config("memae")).eval()
    x = torch.rand(4, 1, 32, 32)
    out = model(x)
    _, weights = model.memory(model.encoder(x))
    torch.testing.assert_close(out.aux_loss, ENTROPY_WEIGHT * attention_entropy(weights))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return synthetic(tmp_path_factory.mktemp("phantoms"), n_train=10, n_test=3, tasks=("brain_mri", "head_ct"))


@pytest.mark.parametrize("name,tasks", [("ae", "[head_ct]"), ("ae_u", "[brain_mri]"), ("memae", "[]")])
def test_baseline_trains_and_evaluates_through_the_engine(name: str, tasks: str, data, tmp_path: Path) -> None:
    config = fast_config(tmp_path, f"model.architecture={name}", f"model.hallucination={BASELINES[name]}",
                         "model.prompt=false", "train.epochs=1", f"train.tasks={tasks}")
    result = train(config, [data], tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["routing"] == 0.0
    if name == "memae":  # the entropy term is part of the loss the optimiser saw
        assert history[0]["loss"] > history[0]["reconstruction"]
    else:
        assert history[0]["loss"] == pytest.approx(history[0]["reconstruction"])
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint.prompt_embeddings is None
    expected_tasks = ["brain_mri", "head_ct"] if tasks == "[]" else [tasks.strip("[]")]
    assert checkpoint.tasks.ids == expected_tasks == list(result.thresholds)
    metrics = compute_metrics(checkpoint, collect(checkpoint, [data], progress=False))
    assert list(metrics.tasks) == expected_tasks
    assert all(m.routing_accuracy is None for m in metrics.tasks.values())
    assert 0.0 <= metrics.mean["auroc"] <= 1.0
