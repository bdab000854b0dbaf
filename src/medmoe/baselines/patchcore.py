"""The peers a user would pick instead of a trained model: PatchCore and image-level 1-NN, on the same
frozen trunk features as ``feature_moe`` (no training, only a memory of normal features).

- :class:`PatchCore` (Roth et al. 2022, as anomalib implements it): each location's trunk feature,
  averaged over its 3×3 neighbourhood (local aggregation), is a patch; the memory bank is a greedy
  k-center coreset (``coreset_ratio`` of the training patches, chosen on a random projection to 128
  dimensions, as anomalib does); a patch's anomaly is the distance to its nearest memory patch; the
  image score is the maximum over patches, the map the patch distances upsampled and smoothed
  (Gaussian, σ = 4 px). One bank per task (``per_task=True``, the task named by the user) or one bank
  over every task (universal, no prompt).
- :class:`FeatureNN`: the image's mean-pooled trunk feature, scored by its distance to the nearest
  training image of its task.

Both take prepared inputs ``(B, D, h, w)`` (:meth:`medmoe.model.trunk.FrozenTrunk.forward`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def patches(features: torch.Tensor) -> torch.Tensor:
    """Locally aggregated patch features: ``(B, D, h, w)`` → ``(B, h·w, D)`` (3×3 mean, stride 1)."""
    pooled = F.avg_pool2d(features, 3, stride=1, padding=1, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2)


def greedy_coreset(points: torch.Tensor, size: int, *, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``points (n, D)`` (``size`` of them).

    Distances are taken on a Gaussian random projection to ``projection_dim`` (Johnson–Lindenstrauss),
    as PatchCore does, starting from a seeded random point.
    """
    n = len(points)
    if size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    if points.shape[1] > projection_dim:
        proj = torch.randn(points.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        points = points @ proj
    points = points.contiguous()
    norms = points.square().sum(dim=1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), math.inf)
    for i in range(size):
        if i:
            chosen[i] = int(nearest.argmax())
        c = chosen[i]
        # ||p − c||² = ||p||² − 2 p·c + ||c||², one matrix-vector product per step
        torch.minimum(nearest, norms - 2 * (points @ points[c]) + norms[c], out=nearest)
    return chosen


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance of each query ``(q, D)`` to its nearest row of ``bank (m, D)``: ``(q,)``."""
    out = torch.empty(len(queries))
    bank_sq = bank.square().sum(dim=1)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d2 = q.square().sum(dim=1, keepdim=True) - 2 * q @ bank.T + bank_sq
        out[start:start + chunk] = d2.min(dim=1).values.clamp_min(0).sqrt()
    return out


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` maps (reflect padding, radius 4σ)."""
    radius = max(1, int(4 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-x.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


class PatchCore:
    """PatchCore on prepared trunk features (see the module docstring).

    Args:
        coreset_ratio: share of training patches kept in each memory bank. anomalib's default is 0.1;
            greedy selection costs ``n·ratio·n`` distance evaluations, so on a CPU the harness uses 0.01
            (``benchmarks/results/cpu-feat`` states the setting it ran).
        per_task: one bank per task (the caller passes each image's task); else one universal bank.
        resolution: side of the anomaly maps (the image resolution).
        seed: seeds the coreset's projection and start.
    """

    def __init__(self, coreset_ratio: float = 0.01, *, per_task: bool = True, resolution: int = 128,
                 seed: int = 0) -> None:
        self.coreset_ratio = coreset_ratio
        self.per_task = per_task
        self.resolution = resolution
        self.seed = seed
        self.banks: dict[int, torch.Tensor] = {}

    def fit(self, features: torch.Tensor, task_ids: torch.Tensor) -> PatchCore:
        """Build the memory bank(s) from training-normal features ``(n, D, h, w)`` and tasks ``(n,)``."""
        groups = task_ids.unique().tolist() if self.per_task else [-1]
        for task in groups:
            rows = features if task == -1 else features[task_ids == task]
            points = patches(rows).flatten(0, 1)
            size = max(1, int(len(points) * self.coreset_ratio))
            self.banks[task] = points[greedy_coreset(points, size, seed=self.seed)].contiguous()
        return self

    @torch.no_grad()
    def score(self, features: torch.Tensor, task_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores ``(B,)`` and anomaly maps ``(B, 1, R, R)`` of features ``(B, D, h, w)``."""
        b, _, h, w = features.shape
        dist = torch.empty(b, h * w)
        query = patches(features)
        for task in task_ids.unique().tolist():
            rows = task_ids == task
            bank = self.banks[task if self.per_task else -1]
            dist[rows] = nearest_distance(query[rows].flatten(0, 1), bank).view(-1, h * w)
        maps = F.interpolate(dist.view(b, 1, h, w), size=(self.resolution, self.resolution), mode="bilinear",
                             align_corners=False)
        return dist.max(dim=1).values, gaussian_blur(maps, sigma=4.0)


class FeatureNN:
    """Per-task 1-NN on the mean-pooled trunk feature (see the module docstring)."""

    def __init__(self) -> None:
        self.banks: dict[int, torch.Tensor] = {}

    def fit(self, features: torch.Tensor, task_ids: torch.Tensor) -> FeatureNN:
        """Remember the pooled features ``(n, D)`` of each task's training normals."""
        pooled = features.mean(dim=(2, 3))
        self.banks = {t: pooled[task_ids == t] for t in task_ids.unique().tolist()}
        return self

    @torch.no_grad()
    def score(self, features: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Distance ``(B,)`` of each image's pooled feature to its task's nearest training image."""
        pooled = features.mean(dim=(2, 3))
        out = torch.empty(len(pooled))
        for task in task_ids.unique().tolist():
            rows = task_ids == task
            out[rows] = nearest_distance(pooled[rows], self.banks[task])
        return out
