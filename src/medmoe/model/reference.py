"""A plain reference implementation of the experts: one decoder module per expert, looped.

It is the paper's model written the obvious way. It serves as the test oracle for
:class:`~medmoe.model.experts.ExpertBank` and as the baseline of ``benchmarks/speed.py``;
:func:`load_bank_from_decoders` copies its weights into a bank so both compute the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from medmoe.model.config import ModelConfig
from medmoe.model.experts import ExpertBank, decoder_channels
from medmoe.model.vision import PixelSettings


class ExpertDecoder(nn.Module):
    """One hallucination-aware decoder: ``v (B, latent)`` → ``(B, out, R, R)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        ch = decoder_channels(config)
        self.bottleneck = config.bottleneck
        self.first_channels = ch[0]
        width = config.settings_as(PixelSettings).fc_width
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, ch[0] * config.bottleneck**2, bias=False),
            nn.BatchNorm1d(ch[0] * config.bottleneck**2),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i in range(4):
            last = i == 3
            layers.append(nn.ConvTranspose2d(ch[i], ch[i + 1], 4, stride=2, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(ch[i + 1]), nn.ReLU(inplace=True)]
        self.deconv = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        s = self.bottleneck
        return self.deconv(self.fc(v).reshape(v.shape[0], self.first_channels, s, s))


class LoopedExperts(nn.Module):
    """N separate :class:`ExpertDecoder` modules run one after another; same interface as the bank.

    Shapes: ``v (B, latent)`` → ``(B, N, out, R, R)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.decoders = nn.ModuleList(ExpertDecoder(config) for _ in range(config.num_experts))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.stack([decoder(v) for decoder in self.decoders], dim=1)

    def mix(self, v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The router-weighted sum of the experts: ``v (B, latent)``, ``weights (B, N)`` → ``(B, out, R, R)``."""
        return torch.einsum("bn,bnchw->bchw", weights, self(v))


@torch.no_grad()
def load_bank_from_decoders(bank: ExpertBank, looped: LoopedExperts) -> None:
    """Copy the parameters and batch-norm statistics of N looped decoders into a bank."""
    if len(looped.decoders) != bank.num_experts:
        raise ValueError(f"{len(looped.decoders)} decoders for a bank of {bank.num_experts} experts")
    fc1, bn1, _, fc2, bn2, _ = bank.fc
    decoders = list(looped.decoders)
    fc1.weight.copy_(torch.stack([d.fc[0].weight.t() for d in decoders]))
    fc2.weight.copy_(torch.stack([d.fc[3].weight.t() for d in decoders]))
    for grouped, index in ((bn1, 1), (bn2, 4)):
        _copy_norm(grouped, [d.fc[index] for d in decoders])
    bank_layers = list(bank.deconv)
    for position, layer in enumerate(bank_layers):
        parts = [d.deconv[position] for d in decoders]
        if isinstance(layer, nn.ConvTranspose2d):
            layer.weight.copy_(torch.cat([p.weight for p in parts], dim=0))
            if layer.bias is not None:
                layer.bias.copy_(torch.cat([p.bias for p in parts]))
        elif isinstance(layer, nn.BatchNorm2d):
            _copy_norm(layer, parts)


def _copy_norm(target: nn.modules.batchnorm._BatchNorm, parts: list[nn.Module]) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(torch.cat([getattr(p, name) for p in parts]))
