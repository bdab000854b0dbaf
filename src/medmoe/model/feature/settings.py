"""``feature_moe``'s own settings (:class:`FeatureMoESettings`), read by its network, branch, adapter and growth."""

from __future__ import annotations

from dataclasses import dataclass

from medmoe.errors import ConfigError
from medmoe.model.config import ArchitectureSettings
from medmoe.model.feature.memory import check_distance

FEATURE_EXPERTS = ("reconstruct", "retrieve", "hybrid")
ADDED_TASK_EXPERTS = ("expert", "route")


@dataclass(frozen=True)
class FeatureMoESettings(ArchitectureSettings):
    """What ``feature_moe`` alone reads.

    Attributes:
        feature_width: channels ``E`` of the shared bottleneck (experts use ``E/2``).
        feature_dropout: dropout on that bottleneck in training (the noisy bottleneck).
        feature_error: per-location error of a reconstructed feature map: ``mse`` or ``cosine``.
        feature_expert: what the experts do: ``reconstruct`` the feature map from the shared bottleneck,
            or ``retrieve`` each location's nearest normal patch from the expert's memory (expert ``k``
            remembers task ``k mod T``'s training patches), or ``hybrid``: both, their errors averaged at
            inference; each expert also predicts its hallucination map from the bottleneck.
        hybrid_weight: ``hybrid``'s share of the retrieval error in the map, ``w``: ``(1 − w)`` times the
            hallucination-discounted reconstruction error plus ``w`` times the retrieval error over its
            training-normal median (0.5: their mean).
        memory_distance: how the retrieval experts compare a patch with their memory: ``euclidean`` on
            the trunk's scale (PatchCore's) or ``cosine`` (:mod:`medmoe.model.feature.memory`).
        error_quantile: the error temperature is this quantile of the training normals' errors (Eq. 5
            can only switch the hallucination map on where ``e > 1``).
        score_top_fraction: image score = mean of the largest share of the anomaly map; 0 is the
            paper's mean of the whole map (§3.5).
        map_sigma: the anomaly map, upsampled to the image, is smoothed by a Gaussian of this σ in pixels before
            the score is read from it (0: not smoothed; PatchCore smooths with 4).
        added_tasks: tasks added to the trained model by ``medmoe add-task`` (each a
            :class:`~medmoe.model.feature.adapter.TaskAdapter`; the model's own weights untouched).
        added_task_expert: what an added task gets: its own ``expert`` (a decoder and a memory of its
            normals) or a ``route`` (learned weights over the existing experts, and its memory).
    """

    feature_width: int = 128
    feature_dropout: float = 0.2
    feature_error: str = "mse"
    feature_expert: str = "reconstruct"
    memory_distance: str = "euclidean"
    hybrid_weight: float = 0.5
    error_quantile: float = 0.5
    score_top_fraction: float = 0.0
    map_sigma: float = 0.0
    added_tasks: int = 0
    added_task_expert: str = "expert"

    def __post_init__(self) -> None:
        for name, value, allowed in (("feature_expert", self.feature_expert, FEATURE_EXPERTS),
                                     ("added_task_expert", self.added_task_expert, ADDED_TASK_EXPERTS),
                                     ("feature_error", self.feature_error, ("mse", "cosine"))):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")
        check_distance("memory_distance", self.memory_distance)
        for name, fraction in (("feature_dropout", self.feature_dropout), ("error_quantile", self.error_quantile),
                               ("score_top_fraction", self.score_top_fraction)):
            if not 0 <= fraction < 1:
                raise ConfigError(f"{name} must be in [0, 1), not {fraction}")
        if self.map_sigma < 0:
            raise ConfigError(f"map_sigma must be ≥ 0 (0: no smoothing), not {self.map_sigma}")
        if not 0 <= self.hybrid_weight <= 1:
            raise ConfigError(f"hybrid_weight must be in [0, 1], not {self.hybrid_weight}")
        if self.feature_width < 1:
            raise ConfigError(f"feature_width must be positive, not {self.feature_width}")
        if self.added_tasks < 0:
            raise ConfigError(f"added_tasks must be ≥ 0, not {self.added_tasks}")
