"""Hallucination-aware decoder experts (paper §3.3.2), all N held as one module.

Each expert decodes ``v`` into ``mu`` (reconstruction) and ``sigma`` (hallucination propensity):
FC ``latent → fc_width`` (BN, ReLU) → FC ``→ 64·(R/16)²`` (BN, ReLU) → reshape → four ConvTranspose
4×4 stride 2 with channels 64-32-16-2C, BN+ReLU after every layer except the last.

:class:`ExpertBank` stores the N decoders as stacked FC weights (one ``einsum`` each) and grouped
``ConvTranspose2d``/``BatchNorm`` layers (``groups=N``). Batch norm is per channel and every group
sees only its own expert's channels, so this is exactly N separate decoders (tested against the plain
loop in :mod:`medmoe.model.reference`), in ~4 kernels instead of 4N; every parameter gets a gradient
(plain DDP works) and it exports to ONNX. All N experts are evaluated densely; the router's top-K
zeros the weights of the others.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medmoe.model.config import ModelConfig


def decoder_channels(config: ModelConfig) -> tuple[int, ...]:
    """Channels along one decoder's conv stack: ``(64, 64, 32, 16, out)`` for the paper."""
    out = config.in_channels * (2 if config.hallucination else 1)
    last = config.encoder_channels[-1]
    return (last, *reversed(config.encoder_channels[:-1]), out)


class StackedLinear(nn.Module):
    """N independent bias-free linear maps applied to ``(B, in)`` or ``(B, N, in)`` inputs.

    Shapes: ``(B, in)`` or ``(B, N, in)`` → ``(B, N, out)``. Initialised like ``nn.Linear``.
    """

    def __init__(self, num: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, in_features, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.einsum("bi,nio->bno", x, self.weight)
        return torch.einsum("bni,nio->bno", x, self.weight)


class GroupedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over ``(B, N, F)``: independent statistics per expert and feature."""

    def __init__(self, num: int, features: int) -> None:
        super().__init__(num * features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, f = x.shape
        return super().forward(x.reshape(b, n * f)).reshape(b, n, f)


class ExpertBank(nn.Module):
    """N hallucination-aware decoders evaluated together.

    Shapes: ``v (B, latent_dim)`` → ``(B, N, 2C, R, R)`` (``(B, N, C, R, R)`` without the
    hallucination head); channel ``[:C]`` is ``mu``, ``[C:]`` is ``sigma``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n = config.num_experts
        ch = decoder_channels(config)
        self.num_experts = n
        self.bottleneck = config.bottleneck
        self.fc = nn.Sequential(
            StackedLinear(n, config.latent_dim, config.fc_width),
            GroupedBatchNorm1d(n, config.fc_width),
            nn.ReLU(inplace=True),
            StackedLinear(n, config.fc_width, ch[0] * config.bottleneck**2),
            GroupedBatchNorm1d(n, ch[0] * config.bottleneck**2),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i in range(4):
            last = i == 3
            layers.append(nn.ConvTranspose2d(n * ch[i], n * ch[i + 1], kernel_size=4, stride=2,
                                             padding=1, groups=n, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(n * ch[i + 1]), nn.ReLU(inplace=True)]
        self.deconv = nn.Sequential(*layers)
        self.first_channels = ch[0]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``v (B, latent)`` → ``(B, N, out, R, R)``."""
        b, s = v.shape[0], self.bottleneck
        h = self.fc(v).reshape(b, self.num_experts * self.first_channels, s, s)
        out = self.deconv(h)
        return out.reshape(b, self.num_experts, -1, *out.shape[-2:])
