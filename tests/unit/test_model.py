"""The model against the paper's formulas (§3) and the plain per-expert reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmoe.errors import ConfigError
from medmoe.model import ModelConfig, PromptMoE, create_model, model_config
from medmoe.model.experts import ExpertBank, subpixel_kernel
from medmoe.model.feature.settings import FeatureMoESettings
from medmoe.model.losses import hallucination_loss, routing_loss, total_loss
from medmoe.model.reference import LoopedExperts, load_bank_from_decoders
from medmoe.model.router import top_k_renormalise
from medmoe.model.scoring import anomaly_map, image_score
from medmoe.model.vision import PixelSettings

SMALL = dict(resolution=32, fc_width=64, text_dim=12, num_experts=4, top_k=4)


def small_config(**overrides) -> ModelConfig:
    return model_config({**SMALL, **overrides})


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_output_shapes(resolution: int) -> None:
    config = small_config(resolution=resolution)
    model = PromptMoE(config)
    out = model(torch.rand(3, 1, resolution, resolution), torch.randn(3, 12))
    assert out.x_hat.shape == out.u.shape == (3, 1, resolution, resolution)
    assert out.anomaly_map.shape == (3, 1, resolution, resolution)
    assert out.score.shape == (3,)
    assert out.router_weights.shape == out.router_logits.shape == (3, 4)
    assert out.features.shape == (3, config.latent_dim)


def matched_experts(config: ModelConfig, train: bool, schedule: str = "auto") -> tuple[LoopedExperts, ExpertBank]:
    """A looped reference with non-trivial batch-norm statistics and affine parameters, and a bank
    holding the same weights."""
    torch.manual_seed(0)
    looped, bank = LoopedExperts(config), ExpertBank(config, schedule=schedule)
    for module in looped.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    load_bank_from_decoders(bank, looped)
    return looped.train(train), bank.train(train)


SCHEDULES = ["grouped", "per_expert"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("hallucination", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_expert_bank_equals_looped_decoders(schedule: str, hallucination: bool, train: bool) -> None:
    config = small_config(hallucination=hallucination, in_channels=2)
    looped, bank = matched_experts(config, train, schedule)
    v = torch.randn(5, config.latent_dim)
    for _ in range(2):  # twice: the second pass sees updated running statistics in eval mode too
        expected, got = looped(v), bank(v)
        assert got.shape == (5, 4, 4 if hallucination else 2, 32, 32)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for position in (1, 4, 7):  # running statistics and batch counts updated identically
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(bank.deconv[position], name),
                                       torch.cat([getattr(d.deconv[position], name) for d in looped.decoders]))
        assert bank.deconv[position].num_batches_tracked == looped.decoders[0].deconv[position].num_batches_tracked


def test_auto_schedule_is_per_expert_for_cpu_batches() -> None:
    bank = ExpertBank(small_config())
    assert bank.grouped(torch.randn(1, 16)) and not bank.grouped(torch.randn(2, 16))
    assert not ExpertBank(small_config(), schedule="per_expert").grouped(torch.randn(1, 16))
    with pytest.raises(ValueError, match="schedule"):
        ExpertBank(small_config(), schedule="fast")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("hallucination", [True, False])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("top_k", [1, 4])
def test_bank_mix_equals_weighted_sum_of_looped_decoders(schedule: str, hallucination: bool, train: bool,
                                                         top_k: int) -> None:
    """``mix`` is Σ_n s_n expert_n(v): values with and without autograd (transposed and sub-pixel last
    layer) and gradients w.r.t. v, the weights and the parameters."""
    config = small_config(hallucination=hallucination, in_channels=2)
    looped, bank = matched_experts(config, train, schedule)
    v = torch.randn(5, config.latent_dim)
    s = top_k_renormalise(torch.softmax(torch.randn(5, 4), dim=1), top_k)
    with torch.no_grad():
        torch.testing.assert_close(bank.mix(v, s), looped.mix(v, s), rtol=1e-4, atol=1e-5)
    results = []
    for experts in (looped, bank):
        v_, s_ = v.clone().requires_grad_(), s.clone().requires_grad_()
        mixed = experts.mix(v_, s_)
        (mixed * torch.linspace(-1, 1, mixed.numel()).view_as(mixed)).sum().backward()
        results.append((mixed, v_.grad, s_.grad))
    (expected, *expected_grads), (got, *got_grads) = results
    assert got.shape == (5, 4 if hallucination else 2, 32, 32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for g, e in zip(got_grads, expected_grads, strict=False):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    decoders = list(looped.decoders)
    torch.testing.assert_close(bank.head.weight.grad, torch.cat([d.deconv[-1].weight.grad for d in decoders]),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bank.head.bias.grad, torch.cat([d.deconv[-1].bias.grad for d in decoders]),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bank.deconv[0].weight.grad, torch.cat([d.deconv[0].weight.grad for d in decoders]),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bank.fc[3].weight.grad, torch.stack([d.fc[3].weight.grad.t() for d in decoders]),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("in_channels,out_channels,size", [(3, 2, 5), (8, 1, 4), (16, 5, 7)])
def test_subpixel_kernel_is_the_transposed_conv(in_channels: int, out_channels: int, size: int) -> None:
    g = torch.Generator().manual_seed(in_channels)
    x = torch.randn(2, in_channels, size, size + 1, generator=g, dtype=torch.float64)
    w = torch.randn(in_channels, out_channels, 4, 4, generator=g, dtype=torch.float64)
    expected = torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=1)
    got = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(x, subpixel_kernel(w), padding=1), 2)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_fused_adam_of_the_trainer_matches_plain_adam() -> None:
    """``make_optimizer`` (fused Adam) takes the same steps as the textbook single-tensor Adam."""
    from medmoe.engine.config import TrainConfig
    from medmoe.engine.train import make_optimizer

    torch.manual_seed(0)
    plain_model = PromptMoE(small_config())
    fused_model = PromptMoE(small_config())
    fused_model.load_state_dict(plain_model.state_dict())
    tc = TrainConfig(lr=1e-3, weight_decay=1e-4)
    plain = torch.optim.Adam(plain_model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, foreach=False)
    fused = make_optimizer(fused_model, tc, torch.device("cpu"))
    assert fused.defaults["fused"]
    for _ in range(5):  # the same gradients for both, of very different scales per step
        scale = 10.0 ** torch.randint(-6, 2, ()).item()
        for p, q in zip(plain_model.parameters(), fused_model.parameters(), strict=False):
            p.grad = torch.randn_like(p) * scale
            q.grad = p.grad.clone()
        plain.step()
        fused.step()
    for (name, p), q in zip(plain_model.named_parameters(), fused_model.parameters(), strict=False):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


def test_every_parameter_gets_a_gradient() -> None:
    model = PromptMoE(small_config())
    out = model(torch.rand(4, 1, 32, 32), torch.randn(4, 12))
    loss = total_loss(torch.rand(4, 1, 32, 32), out.x_hat, out.u, out.router_logits,
                      torch.tensor([0, 1, 2, 3]), alpha=1.0, beta=1.0).total
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_hallucination_loss_matches_eq5() -> None:
    g = torch.Generator().manual_seed(1)
    x, x_hat, u = (torch.randn(2, 1, 3, 4, generator=g) for _ in range(3))
    total = 0.0
    for i in range(2):
        for j in range(12):
            xi, xh, ui = x[i].flatten()[j].item(), x_hat[i].flatten()[j].item(), u[i].flatten()[j].item()
            total += (xi - xh) ** 2 * math.exp(-ui**2) + ui**2
    assert hallucination_loss(x, x_hat, u).item() == pytest.approx(total / (2 * 12), rel=1e-6)


def test_routing_loss_is_cross_entropy_of_softmax() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    tasks = torch.tensor([0, 1])
    p = torch.softmax(logits, dim=1)
    expected = -(math.log(p[0, 0]) + math.log(p[1, 1])) / 2
    assert routing_loss(logits, tasks).item() == pytest.approx(expected, rel=1e-6)


def test_total_loss_weights_its_parts() -> None:
    x, x_hat, u = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    logits, tasks = torch.randn(2, 3), torch.tensor([2, 0])
    parts = total_loss(x, x_hat, u, logits, tasks, alpha=0.3, beta=2.0)
    expected = 0.3 * routing_loss(logits, tasks) + 2.0 * hallucination_loss(x, x_hat, u)
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    mse = total_loss(x, x_hat, None, None, tasks, alpha=0.3, beta=2.0)
    assert mse.total.item() == pytest.approx(2.0 * ((x - x_hat) ** 2).mean().item(), rel=1e-6)


def test_anomaly_map_and_score_match_section_3_5() -> None:
    x, x_hat, u = np.random.default_rng(0).normal(size=(3, 2, 1, 5, 5)).astype(np.float32)
    amap = anomaly_map(torch.from_numpy(x), torch.from_numpy(x_hat), torch.from_numpy(u))
    expected = (x - x_hat) ** 2 * np.exp(-(u**2))
    np.testing.assert_allclose(amap.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(image_score(amap).numpy(), expected.reshape(2, -1).mean(1), rtol=1e-5)
    plain = anomaly_map(torch.from_numpy(x), torch.from_numpy(x_hat))
    np.testing.assert_allclose(plain.numpy(), (x - x_hat) ** 2, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_top_k_keeps_k_weights_renormalised(k: int) -> None:
    probs = torch.softmax(torch.randn(6, 4), dim=1)
    s = top_k_renormalise(probs, k)
    assert ((s > 0).sum(dim=1) == k).all()
    torch.testing.assert_close(s.sum(dim=1), torch.ones(6))
    kept = probs.topk(k, dim=1).indices
    torch.testing.assert_close(s.gather(1, kept), probs.gather(1, kept) / probs.gather(1, kept).sum(1, keepdim=True))


@pytest.mark.parametrize("k", [1, 4])
def test_model_uses_k_experts(k: int) -> None:
    out = PromptMoE(small_config(top_k=k))(torch.rand(5, 1, 32, 32), torch.randn(5, 12))
    assert ((out.router_weights > 0).sum(dim=1) == k).all()
    torch.testing.assert_close(out.router_weights.sum(dim=1), torch.ones(5))


def test_k1_output_is_the_chosen_experts_reconstruction() -> None:
    model = PromptMoE(small_config(top_k=1)).eval()
    x, e = torch.rand(3, 1, 32, 32), torch.randn(3, 12)
    out = model(x, e)
    decoded = model.experts(model.encoder(2 * x - 1))  # the encoder sees the [-1, 1] model range
    chosen = out.router_weights.argmax(dim=1)
    torch.testing.assert_close(out.x_hat, decoded[torch.arange(3), chosen, :1])
    torch.testing.assert_close(out.u, decoded[torch.arange(3), chosen, 1:])


def test_no_hallucination_ablation_maps_squared_error() -> None:
    model = PromptMoE(small_config(hallucination=False)).eval()
    x = torch.rand(2, 1, 32, 32)
    out = model(x, torch.randn(2, 12))
    assert out.u is None
    assert model.experts(torch.randn(2, 16)).shape[2] == 1  # no sigma channel at all
    torch.testing.assert_close(out.anomaly_map, (2 * x - 1 - out.x_hat) ** 2)  # in the [-1, 1] model range


def test_no_prompt_ablation_ignores_text() -> None:
    model = PromptMoE(small_config(prompt=False)).eval()
    assert model.prompt_encoder is None
    x = torch.rand(2, 1, 32, 32)
    a, b = model(x), model(x, torch.randn(2, 12))
    torch.testing.assert_close(a.score, b.score)
    assert model.router.fc.in_features == model.config.latent_dim


def test_prompt_changes_routing() -> None:
    model = PromptMoE(small_config()).eval()
    x = torch.rand(1, 1, 32, 32).expand(2, -1, -1, -1)
    out = model(x, torch.randn(2, 12) * 5)
    assert not torch.allclose(out.router_weights[0], out.router_weights[1])
    with pytest.raises(ValueError, match="text_embedding"):
        model(x)


@pytest.mark.parametrize("prompt", [True, False])
def test_router_norm_puts_image_and_prompt_on_one_scale(prompt: bool) -> None:
    torch.manual_seed(0)
    plain, normed = PromptMoE(small_config(prompt=prompt)).eval(), PromptMoE(small_config(prompt=prompt, router_norm=True)).eval()
    normed.load_state_dict(plain.state_dict())  # no new parameters
    v, text = torch.randn(3, 16) * 30, torch.randn(3, 12) * 0.01
    raw, balanced = plain.router_input(v, text), normed.router_input(v, text)
    assert raw.shape == balanced.shape == (3, 16 + (16 if prompt else 0))
    torch.testing.assert_close(raw[:, :16], v)
    for part in balanced.split(16, dim=1):  # each part: zero mean, unit variance per image
        torch.testing.assert_close(part.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(part.var(1, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    x = torch.rand(3, 1, 32, 32)
    out = normed(x, text)
    logits, _ = normed.router(normed.router_input(out.features, text))
    torch.testing.assert_close(out.router_logits, logits)


@pytest.mark.parametrize("bad", [dict(resolution=40), dict(top_k=0), dict(top_k=5, num_experts=4)])
def test_invalid_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        small_config(**bad)


def test_config_round_trips() -> None:
    config = small_config(hallucination=False, top_k=2)
    assert model_config(config.to_dict()) == config
    with pytest.raises(ConfigError, match="model.bogus is unknown"):
        model_config({**config.to_dict(), "bogus": 1})


def test_each_family_reads_its_own_settings() -> None:
    """A family's settings sit flat in the ``model`` section; another family's are refused with their owners,
    except in a record medmoe wrote (≤ 0.2.0 stored every family's settings in one)."""
    feature = model_config({"architecture": "feature_moe", "feature_width": 32})
    assert feature.settings == FeatureMoESettings(feature_width=32)
    assert model_config(feature.to_dict()) == feature
    with pytest.raises(ConfigError, match="model.fc_width belongs to ae, ae_u, memae, pixel_moe, not feature_moe"):
        model_config({**feature.to_dict(), "fc_width": 64})
    union = {**feature.to_dict(), "fc_width": 2048, "encoder_channels": [16, 32, 64, 64]}  # a 0.2.0 checkpoint
    assert model_config(union, stored=True) == feature
    with pytest.raises(ConfigError, match="model.bogus is unknown"):
        model_config({**union, "bogus": 1}, stored=True)
    with pytest.raises(ConfigError, match="reads PixelSettings, not FeatureMoESettings"):
        create_model(ModelConfig(architecture="pixel_moe", settings=feature.settings))
    with pytest.raises(ConfigError, match="feature_expert must be one of"):
        model_config({"architecture": "feature_moe", "feature_expert": "dream"})
    assert small_config().settings == PixelSettings(fc_width=64)


def test_model_works_in_its_value_range() -> None:
    """Inputs in [0, 1] are mapped to value_range; reconstruction and map live there."""
    torch.manual_seed(0)
    x, e = torch.rand(2, 1, 32, 32), torch.randn(2, 12)
    wide = PromptMoE(small_config(value_range=(-1.0, 1.0))).eval()
    out = wide(x, e)
    expected = ((2 * x - 1 - out.x_hat) ** 2 * torch.exp(-out.u**2))
    torch.testing.assert_close(out.anomaly_map, expected)
    with pytest.raises(ConfigError, match="value_range"):
        small_config(value_range=(1.0, 0.0))


def test_hallucination_optimum_needs_errors_above_one() -> None:
    """Eq. 5 per pixel, e·exp(-u²) + u², is minimised by u = 0 when e <= 1 and by u² = ln e above:
    why the model works in [-1, 1] (squared errors up to 4) rather than [0, 1]."""
    u = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    for e, best in ((0.25, 0.0), (0.9, 0.0), (4.0, math.sqrt(math.log(4.0)))):
        loss = e * torch.exp(-u**2) + u**2
        assert abs(u[loss.argmin()].abs().item() - best) < 2e-3
