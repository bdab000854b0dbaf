"""The model's hyper-parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from medmoe.errors import ConfigError

LEGACY_ARCHITECTURES = {"moe": "pixel_moe"}
"""Architecture names of earlier versions in configs, checkpoints and ONNX sidecars, and their names now."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a registered model (defaults: the paper's pixel model, §4.3).

    Attributes:
        architecture: registered model name (see :func:`medmoe.model.registry.create_model`):
            ``pixel_moe`` (the paper's model as published), ``feature_moe`` (the default profile's) or a
            baseline; a name an architecture had before (``moe``) is read as its name now.
        resolution: input side length R (a multiple of 16); the FC sizes follow from it.
        in_channels: image channels C (1: grayscale, as in the paper).
        encoder_channels: output channels of the four stride-2 convolutions.
        fc_width: width of the hidden fully connected layer in encoder and decoders.
        latent_dim: size of the image feature ``v``.
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
        trunk: frozen pretrained trunk of the feature architectures (``feature_moe`` and the feature
            peers): ``efficientnet_lite0``, ``_lite1`` or ``_lite2`` (see :mod:`medmoe.model.feature.trunk`).
        trunk_stages: the trunk's MBConv groups whose outputs are concatenated (0–6; strides 2, 4, 8,
            16, 16, 32, 32); the feature grid is that of the first.
        feature_width: channels ``E`` of ``feature_moe``'s shared bottleneck (experts use ``E/2``).
        feature_dropout: dropout on that bottleneck in training (the noisy bottleneck).
        feature_error: per-location error of a reconstructed feature map: ``mse`` or ``cosine``.
        feature_expert: what ``feature_moe``'s experts do: ``reconstruct`` the feature map from the
            shared bottleneck, or ``retrieve`` each location's nearest normal patch from the expert's
            memory (expert ``k`` remembers task ``k mod T``'s training patches), or ``hybrid``: both,
            their errors averaged at inference; each expert also predicts its hallucination map from
            the bottleneck.
        error_quantile: the error temperature of ``feature_moe`` is this quantile of the training
            normals' errors (Eq. 5 can only switch the hallucination map on where ``e > 1``).
        score_top_fraction: image score = mean of the largest share of the anomaly map; 0 is the
            paper's mean of the whole map (§3.5). Used by ``feature_moe``.
        added_tasks: tasks added to a trained ``feature_moe`` by ``medmoe add-task`` (each a
            :class:`~medmoe.model.feature.adapter.TaskAdapter`; the model's own weights untouched).
        added_task_expert: what an added task gets: its own ``expert`` (a decoder and a memory of its
            normals) or a ``route`` (learned weights over the existing experts, and its memory).
    """

    architecture: str = "pixel_moe"
    resolution: int = 64
    in_channels: int = 1
    encoder_channels: tuple[int, int, int, int] = (16, 32, 64, 64)
    fc_width: int = 2048
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
    feature_width: int = 128
    feature_dropout: float = 0.2
    feature_error: str = "mse"
    feature_expert: str = "reconstruct"
    error_quantile: float = 0.5
    score_top_fraction: float = 0.0
    added_tasks: int = 0
    added_task_expert: str = "expert"

    def __post_init__(self) -> None:
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            raise ConfigError(f"value_range must be [low, high] with low < high, not {self.value_range}")
        if self.resolution < 16 or self.resolution % 16:
            raise ConfigError(f"resolution must be a multiple of 16 (≥16), not {self.resolution}")
        if len(self.encoder_channels) != 4:
            raise ConfigError(f"encoder_channels needs 4 entries, got {self.encoder_channels}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"top_k must be in 1..num_experts={self.num_experts}, not {self.top_k}")
        if self.feature_expert not in ("reconstruct", "retrieve", "hybrid"):
            raise ConfigError("feature_expert must be 'reconstruct', 'retrieve' or 'hybrid', "
                              f"not {self.feature_expert!r}")
        if self.added_task_expert not in ("expert", "route"):
            raise ConfigError(f"added_task_expert must be 'expert' or 'route', not {self.added_task_expert!r}")
        if self.added_tasks < 0:
            raise ConfigError(f"added_tasks must be ≥ 0, not {self.added_tasks}")
        if self.feature_error not in ("mse", "cosine"):
            raise ConfigError(f"feature_error must be 'mse' or 'cosine', not {self.feature_error!r}")
        for name, value in (("feature_dropout", self.feature_dropout), ("error_quantile", self.error_quantile),
                            ("score_top_fraction", self.score_top_fraction)):
            if not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), not {value}")
        for name in ("feature_width", "in_channels", "fc_width", "latent_dim", "num_experts", "text_dim", "prompt_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")

    @property
    def bottleneck(self) -> int:
        """Side length of the smallest feature map, R / 16."""
        return self.resolution // 16

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in checkpoints)."""
        data = asdict(self)
        data["encoder_channels"] = list(self.encoder_channels)
        data["value_range"] = list(self.value_range)
        data["trunk_stages"] = list(self.trunk_stages)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model setting(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        if "architecture" in values:
            values["architecture"] = LEGACY_ARCHITECTURES.get(values["architecture"], values["architecture"])
        for key in ("encoder_channels", "value_range", "trunk_stages"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid model settings: {exc}") from exc
