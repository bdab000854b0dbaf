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

The mixture ``Σ_n s_n expert_n(v)`` is computed by :meth:`ExpertBank.mix` without building the N
full-resolution expert outputs: the last transposed conv is linear, so scaling its N input groups by
``s_n`` and running it as *one dense* conv over all ``N·16`` channels (the grouped weight, read as a
dense one, has exactly that layout) sums the experts inside the convolution. Without autograd that conv
runs in its sub-pixel form (:func:`subpixel_kernel`: one ordinary 3×3 conv + ``pixel_shuffle``, whose
forward is ~1.5-2× faster on CPU for this narrow layer); with autograd as the transposed conv, whose
backward is cheaper.

Speed on CPU (``benchmarks/speed.py``): grouping saves kernel launches, which is what counts at batch 1
(and on GPUs); at batch 64 on one CPU thread the grouped kernels are no faster than N separate ones
(whose smaller working sets stay in cache). Tried and rejected: ``channels_last`` (faster convolutions,
but PyTorch's CPU channels-last batch norm accumulates its statistics in float32 and was off by ~1e-3
relative at 256×256, batch 64), the sub-pixel form for the wider layers (2.25× the FLOPs: slower),
``torch.compile`` (minutes of compilation for <10 %).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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

    Submodules (the state-dict layout): ``fc``, the two stacked FC layers with their norms, and
    ``deconv``, the four grouped ConvTranspose2d layers with BN+ReLU between them.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n = config.num_experts
        ch = decoder_channels(config)
        self.num_experts = n
        self.bottleneck = config.bottleneck
        self.first_channels = ch[0]
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

    @property
    def head(self) -> nn.ConvTranspose2d:
        """The last layer, ``deconv[-1]``: the grouped ConvTranspose2d (with bias) that outputs mu/sigma."""
        return self.deconv[-1]

    def hidden(self, v: torch.Tensor) -> torch.Tensor:
        """Everything before the last layer: ``v (B, latent)`` → ``(B, N·16, R/2, R/2)``."""
        b, s = v.shape[0], self.bottleneck
        return self.deconv[:-1](self.fc(v).reshape(b, self.num_experts * self.first_channels, s, s))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Every expert's output: ``v (B, latent)`` → ``(B, N, out, R, R)``."""
        out = self.head(self.hidden(v))
        return out.reshape(v.shape[0], self.num_experts, -1, *out.shape[-2:])

    def mix(self, v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The router-weighted sum of the experts, ``Σ_n weights[:, n] · expert_n(v)``.

        Equal to ``einsum("bn,bnchw->bchw", weights, self(v))`` (tested), computed by weighting the
        last layer's input groups and running that layer as one dense sub-pixel conv (see the module
        notes).

        Shapes: ``v (B, latent)``, ``weights (B, N)`` → ``(B, out, R, R)``.
        """
        h = self.hidden(v)
        scaled = (h.unflatten(1, (self.num_experts, -1)) * weights[:, :, None, None, None]).flatten(1, 2)
        if torch.is_grad_enabled():  # the transposed conv has the cheaper backward
            out = F.conv_transpose2d(scaled, self.head.weight, stride=2, padding=1)
        else:  # forward only: the sub-pixel form (one regular conv + pixel shuffle) is faster
            out = F.pixel_shuffle(F.conv2d(scaled, subpixel_kernel(self.head.weight), padding=1), 2)
        bias = weights @ self.head.bias.view(self.num_experts, -1)  # (B, out): Σ_n s_n b_n
        return out + bias[:, :, None, None]


# Output row 2m + a of ConvTranspose2d(kernel 4, stride 2, padding 1) reads input rows m - 1 + d
# (d = 0, 1, 2) through kernel tap 3 + a - 2d; the taps outside 0..3 point at index 4, a zero pad.
_SUBPIXEL_TAPS = torch.tensor([[3, 1, 4], [4, 2, 0]])  # [a, d]; the same for columns


def subpixel_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The sub-pixel form of a ConvTranspose2d(kernel 4, stride 2, padding 1) weight.

    ``pixel_shuffle(conv2d(x, subpixel_kernel(w), padding=1), 2) == conv_transpose2d(x, w, stride=2,
    padding=1)``: each of the four output phases ``(a, b)`` is a 3×3 convolution of the input (with
    zero taps), computed as ``4·out`` channels of one ordinary convolution and interleaved.

    Shapes: ``weight (in, out, 4, 4)`` → ``(4·out, in, 3, 3)``, output channels ordered ``(out, a, b)``.
    """
    taps = _SUBPIXEL_TAPS.to(weight.device)
    kernel = F.pad(weight, (0, 1, 0, 1))[:, :, taps][..., taps]  # (in, out, a, dy, b, dx)
    return kernel.permute(1, 2, 4, 0, 3, 5).reshape(4 * weight.shape[1], weight.shape[0], 3, 3)
