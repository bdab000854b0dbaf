"""The model's hyper-parameters: the settings every architecture shares, and one record per family."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from medmoe.errors import ConfigError

LEGACY_ARCHITECTURES = {"moe": "pixel_moe"}
"""Architecture names of earlier versions in configs, checkpoints and ONNX sidecars, and their names now."""


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` JSON/YAML-serialisable: tuples as lists (the form configs and checkpoints store)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclass(frozen=True)
class ArchitectureSettings:
    """The settings one architecture family alone reads; this base is a family with none.

    A family subclasses it (frozen, every field with a default, validated in ``__post_init__``) and
    registers it with its architectures (``register_model(..., settings=...)``). In a config's ``model``
    section and in checkpoints its fields sit flat beside :class:`ModelConfig`'s, so ``--set
    model.feature_width=64`` reads as before; :func:`medmoe.model.registry.model_config` sorts them.
    """

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples as lists)."""
        return plain(asdict(self))

    @classmethod
    def names(cls) -> frozenset[str]:
        """The setting names of this family."""
        return frozenset(f.name for f in fields(cls))


Settings = TypeVar("Settings", bound=ArchitectureSettings)


@dataclass(frozen=True)
class ModelConfig:
    """What every registered architecture reads (defaults: the paper's pixel model, §4.3), and its family's
    own settings.

    Attributes:
        architecture: registered model name (see :func:`medmoe.model.registry.create_model`):
            ``pixel_moe`` (the paper's model as published), ``feature_moe`` (the default profile's) or a
            baseline; a name an architecture had before (``moe``) is read as its name now.
        resolution: input side length R (a multiple of 16).
        in_channels: image channels C (1: grayscale, as in the paper).
        latent_dim: size of the image feature ``v`` the router reads.
        num_experts: N, the number of decoder experts (≥ number of tasks).
        top_k: K, how many experts each image uses (1 ≤ K ≤ N).
        text_dim: size of the frozen text embedding (384 for all-MiniLM-L6-v2, 512 for CLIP ViT-B).
        prompt_dim: size of ``tau``, the output of the trainable prompt FC.
        hallucination: experts predict a hallucination map ``sigma`` (False: the paper's ablation,
            plain MSE and a squared-error anomaly map).
        prompt: the router sees the prompt (False: the paper's ablation, router sees ``v`` only).
        router_norm: layer-normalise ``v`` and ``tau`` (each on its own, no parameters) before the
            router concatenates them. Not in the paper; off by default. Without it the image feature
            can dwarf the prompt (after cpu-64 training ``|v| ≈ 26`` against ``|tau| ≈ 0.5``), and the
            router then decides on the image alone.
        value_range: the intensity range the network works in; images in [0, 1] are mapped to it
            linearly, and reconstructions, hallucination maps, anomaly maps and losses live in it.
            The default [-1, 1] is DDAD's convention (``Normalize(0.5, 0.5)``). It matters for Eq. 5:
            ``e·exp(−u²) + u²`` is minimised by ``u = 0`` wherever the squared error ``e ≤ 1`` (and by
            ``u² = ln e`` above), so in a [0, 1] range, where ``e`` never exceeds 1, the hallucination
            map could never switch on.
        trunk: frozen pretrained trunk of the feature architectures, and the one every model's scope
            head reads: ``efficientnet_lite0``, ``_lite1`` or ``_lite2`` (see :mod:`medmoe.model.feature.trunk`).
        trunk_stages: the trunk's MBConv groups whose outputs are concatenated (0–6; strides 2, 4, 8,
            16, 16, 32, 32); the feature grid is that of the first.
        settings: the architecture family's own settings (:class:`ArchitectureSettings`); the bare
            base means "the family's defaults" (see :meth:`settings_as`).
    """

    architecture: str = "pixel_moe"
    resolution: int = 64
    in_channels: int = 1
    latent_dim: int = 16
    num_experts: int = 5
    top_k: int = 5
    text_dim: int = 384
    prompt_dim: int = 16
    hallucination: bool = True
    prompt: bool = True
    router_norm: bool = False
    value_range: tuple[float, float] = (-1.0, 1.0)
    trunk: str = "efficientnet_lite0"
    trunk_stages: tuple[int, ...] = (2, 4)
    settings: ArchitectureSettings = field(default_factory=ArchitectureSettings)

    def __post_init__(self) -> None:
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            raise ConfigError(f"value_range must be [low, high] with low < high, not {self.value_range}")
        if self.resolution < 16 or self.resolution % 16:
            raise ConfigError(f"resolution must be a multiple of 16 (≥16), not {self.resolution}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"top_k must be in 1..num_experts={self.num_experts}, not {self.top_k}")
        for name in ("in_channels", "latent_dim", "num_experts", "text_dim", "prompt_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")

    @property
    def bottleneck(self) -> int:
        """Side length of the smallest feature map, R / 16."""
        return self.resolution // 16

    def settings_as(self, kind: type[Settings]) -> Settings:
        """The family settings as ``kind`` (what the architecture's modules read): those given, or ``kind``'s
        defaults when none were.

        Raises:
            ConfigError: the config carries another family's settings.
        """
        if type(self.settings) is ArchitectureSettings:
            return kind()
        if not isinstance(self.settings, kind):
            raise ConfigError(f"architecture {self.architecture!r} reads {kind.__name__}, not "
                              f"{type(self.settings).__name__}")
        return self.settings

    @classmethod
    def common_names(cls) -> frozenset[str]:
        """The setting names every architecture shares (all fields but ``settings``)."""
        return frozenset(f.name for f in fields(cls)) - {"settings"}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in checkpoints): the common fields and the family's, flat."""
        common = plain({f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"})
        return {**common, **self.settings.to_dict()}
