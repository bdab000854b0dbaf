"""Hallucination-aware decoder experts (paper §3.3.2), all N held as one module.

Each expert decodes ``v`` into ``mu`` (reconstruction) and ``sigma`` (hallucination propensity):
FC ``latent → fc_width`` (BN, ReLU) → FC ``→ 64·(R/16)²`` (BN, ReLU) → reshape → four ConvTranspose
4×4 stride 2 with channels 64-32-16-2C, BN+ReLU after every layer except the last.

:class:`ExpertBank` stores the N decoders as stacked FC weights (one ``einsum`` each) and grouped
``ConvTranspose2d``/``BatchNorm`` layers (``groups=N``). Batch norm is per channel and every group
sees only its own expert's channels, so this is exactly N separate decoders (tested against the plain
loop in :mod:`medmoe.model.reference`); every parameter gets a gradient (plain DDP works) and it
exports to ONNX. All N experts are evaluated densely; the router's top-K zeros the weights of the others.

How it runs (``benchmarks/speed.py``, ``benchmarks/results/speed.md``):

- The conv stack has two schedules with the same numbers. *Grouped*: one kernel per layer for all
  experts, fewest launches (single images; GPUs). *Per expert*: expert after expert on views of the
  grouped parameters; on a CPU at batch 64 it is ~20 % faster than grouped (each expert's activations
  stay in cache) and without autograd only one expert's activations are alive. ``auto`` picks per expert
  for CPU batches of more than one image.
- :meth:`ExpertBank.mix` returns ``Σ_n s_n expert_n(v)`` without stacking the N full-resolution outputs.
  Grouped, the last transposed conv (linear) runs as *one dense* conv over the ``N·16`` input channels
  scaled by ``s_n`` (the grouped weight, read as a dense one, has exactly that layout), which sums the
  experts inside the convolution.
- Without autograd the last layer runs in its sub-pixel form (:func:`subpixel_kernel`: one ordinary
  3×3 conv + ``pixel_shuffle``), whose forward is ~1.5-2× faster on CPU for this narrow layer; with
  autograd as the transposed conv, whose backward is cheaper.
- Tried and rejected: ``channels_last`` (faster convolutions, but PyTorch's CPU channels-last batch
  norm accumulates its statistics in float32 and was off by ~1e-3 relative at 256×256, batch 64), the
  sub-pixel form for the wider layers (2.25× the FLOPs: slower), ``torch.compile`` (minutes of
  compilation for <10 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.vision import PixelSettings


def decoder_channels(config: ModelConfig) -> tuple[int, ...]:
    """Channels along one decoder's conv stack: ``(64, 64, 32, 16, out)`` for the paper."""
    out = config.in_channels * (2 if config.hallucination else 1)
    encoder = config.settings_as(PixelSettings).encoder_channels
    return (encoder[-1], *reversed(encoder[:-1]), out)


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


SCHEDULES = ("auto", "grouped", "per_expert")


class ExpertBank(nn.Module):
    """N hallucination-aware decoders held as one module.

    Shapes: ``v (B, latent_dim)`` → ``(B, N, 2C, R, R)`` (``(B, N, C, R, R)`` without the
    hallucination head); channel ``[:C]`` is ``mu``, ``[C:]`` is ``sigma``.

    Submodules (the state-dict layout): ``fc``, the two stacked FC layers with their norms, and
    ``deconv``, the four grouped ConvTranspose2d layers with BN+ReLU between them.

    Args:
        config: architecture.
        schedule: how the conv stack runs (the numbers are the same): ``grouped`` (one kernel per
            layer for all experts), ``per_expert`` (expert after expert on views of the grouped
            parameters) or ``auto``: per expert on CPU for batches of more than one image (their
            smaller working sets stay in cache: ~20 % faster at batch 64), grouped otherwise (fewer
            kernel launches: faster for single images and on GPUs).
    """

    def __init__(self, config: ModelConfig, schedule: str = "auto") -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
        n = config.num_experts
        ch = decoder_channels(config)
        self.num_experts = n
        self.bottleneck = config.bottleneck
        self.first_channels = ch[0]
        self.schedule = schedule
        width = config.settings_as(PixelSettings).fc_width
        self.fc = nn.Sequential(
            StackedLinear(n, config.latent_dim, width),
            GroupedBatchNorm1d(n, width),
            nn.ReLU(inplace=True),
            StackedLinear(n, width, ch[0] * config.bottleneck**2),
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

    def grouped(self, v: torch.Tensor) -> bool:
        """Whether ``v`` runs through the grouped schedule (see the class notes)."""
        if self.schedule != "auto":
            return self.schedule == "grouped"
        return v.device.type != "cpu" or v.shape[0] == 1

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Every expert's output: ``v (B, latent)`` → ``(B, N, out, R, R)``."""
        if self.grouped(v):
            out = self.head(self._hidden_grouped(v))
            return out.reshape(v.shape[0], self.num_experts, -1, *out.shape[-2:])
        return torch.stack([_upsample(x, w, b) for x, w, b in self._per_expert(v)], dim=1)

    def mix(self, v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The router-weighted sum of the experts, ``Σ_n weights[:, n] · expert_n(v)``.

        Equal to ``einsum("bn,bnchw->bchw", weights, self(v))`` (tested) without stacking the N
        full-resolution outputs: grouped, the last layer's input groups are weighted and the layer runs
        as one dense conv (see the module notes); per expert, each output is weighted as it is made.

        Shapes: ``v (B, latent)``, ``weights (B, N)`` → ``(B, out, R, R)``.
        """
        n = self.num_experts
        if self.grouped(v):
            h = self._hidden_grouped(v)
            scaled = (h.unflatten(1, (n, -1)) * weights[:, :, None, None, None]).flatten(1, 2)
            bias = weights @ self.head.bias.view(n, -1)  # (B, out): Σ_n s_n b_n
            return _upsample(scaled, self.head.weight) + bias[:, :, None, None]
        out = None
        for e, (x, w, b) in enumerate(self._per_expert(v)):
            y = _upsample(x, w, b) * weights[:, e, None, None, None]
            out = y if out is None else out + y
        return out

    def _hidden_grouped(self, v: torch.Tensor) -> torch.Tensor:
        """Everything before the last layer, grouped: ``v (B, latent)`` → ``(B, N·16, R/2, R/2)``."""
        b, s = v.shape[0], self.bottleneck
        return self.deconv[:-1](self.fc(v).reshape(b, self.num_experts * self.first_channels, s, s))

    def _per_expert(self, v: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Everything before the last layer, expert after expert (one at a time: without autograd only
        one expert's activations are alive), with that expert's last-layer weight and bias:
        N × ``(x (B, 16, R/2, R/2), weight (16, out, 4, 4), bias (out,))``."""
        b, s, n = v.shape[0], self.bottleneck, self.num_experts
        h = self.fc(v)  # (B, N, 64·s²)
        blocks = [self.deconv[i:i + 3] for i in range(0, len(self.deconv) - 1, 3)]  # (conv, norm, ReLU)
        factors = [_momentum_step(norm) for _, norm, _ in blocks]
        # each tensor split once into its N experts' parts (views)
        convs = [conv.weight.chunk(n) for conv, _, _ in blocks]
        norms = [[t.chunk(n) for t in (norm.running_mean, norm.running_var, norm.weight, norm.bias)]
                 for _, norm, _ in blocks]
        heads = zip(self.head.weight.chunk(n), self.head.bias.chunk(n), strict=False)
        for e, (x, (head_weight, head_bias)) in enumerate(zip(h.unbind(1), heads, strict=False)):
            x = x.reshape(b, self.first_channels, s, s)
            for (_, norm, _), factor, weights, parts in zip(blocks, factors, convs, norms, strict=False):
                x = F.conv_transpose2d(x, weights[e], stride=2, padding=1)
                x = F.batch_norm(x, *(p[e] for p in parts), norm.training, factor, norm.eps).relu_()
            yield x, head_weight, head_bias


def _momentum_step(norm: nn.BatchNorm2d) -> float:
    """What ``norm.forward`` does before normalising: count the batch and return the running-average
    factor (for calling ``F.batch_norm`` on slices of its parameters)."""
    if not norm.training:
        return 0.0
    norm.num_batches_tracked.add_(1)
    return 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum


def _upsample(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv_transpose2d(x, weight, bias, stride=2, padding=1)``; without autograd in its sub-pixel form
    (one ordinary conv + ``pixel_shuffle``: ~1.5-2× faster forward for the narrow last layer), with
    autograd as the transposed conv (cheaper backward)."""
    if torch.is_grad_enabled():
        return F.conv_transpose2d(x, weight, bias, stride=2, padding=1)
    sub_bias = None if bias is None else bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(x, subpixel_kernel(weight), sub_bias, padding=1), 2)


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
