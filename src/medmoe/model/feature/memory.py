"""Memories of normal features: local patch aggregation, greedy coreset, nearest-neighbour distances.

Shared by the retrieval experts of ``feature_moe`` and by the PatchCore and 1-NN peers. A memory
compares patches by one of :data:`DISTANCES`: ``euclidean`` on the trunk's own scale (PatchCore's), or
``cosine``, where patches are stored and queried at unit length, so the nearest row in euclidean
distance is the one of largest cosine similarity (``‖a − b‖² = 2 (1 − cos)``) and the coreset's
k-center geometry is the angular one. On validation synthetic anomalies cosine lifts a 1 % coreset's
mean AUROC from 81.3 to 90.0 (``benchmarks/results/patch-memory.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medmoe.errors import ConfigError

COVERAGE = 0.01
"""Share of training patches a memory keeps (PatchCore; anomalib's default is 0.1, but greedy selection
costs ``n·ratio·n`` distance evaluations, so on a CPU we keep 0.01)."""
DISTANCES = ("euclidean", "cosine")
BANK_CHUNK = 16384
"""Memory rows searched at once by :func:`nearest_distance`, at most."""
PRODUCT_FLOATS = 1 << 28
"""The largest query × memory-row block :func:`nearest_distance` computes at once (1 GiB of float32): 64 images
of 16×16 cells against 16,384 rows; at 32×32 cells the rows per block shrink to 4,096 (a whole block of them,
with its temporaries, ran a 24 GiB machine out of memory)."""
SINGLE_STAGE_WORK = 2_000_000_000
"""Point-steps (``n·size``) up to which :func:`greedy_coreset` runs one greedy pass over every point (a 1 %
coreset of 309k patches, 128 px chest radiographs, is 0.95e9: about a minute on one core)."""
BLOCK_ROWS = 4096
"""Rows per block in the first stage of a two-stage coreset (4 images' patches at 256 px; a block fits in cache)."""
CANDIDATES = 10
"""A two-stage coreset's first stage keeps this many candidates per final row."""
FAR = 1e30
"""Squared distance given to memory rows an image may not use (a finite stand-in for infinity)."""


def check_distance(name: str, value: str) -> None:
    """Refuse a setting ``name`` whose ``value`` is not one of :data:`DISTANCES`."""
    if value not in DISTANCES:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, DISTANCES))}, not {value!r}")


def patches(features: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Locally aggregated patch features: ``(B, D, h, w)`` → ``(B, h·w, D)`` (3×3 mean, stride 1), at unit
    length for the ``cosine`` distance."""
    pooled = F.avg_pool2d(features, 3, stride=1, padding=1, count_include_pad=False).flatten(2).transpose(1, 2)
    return F.normalize(pooled, dim=-1) if distance == "cosine" else pooled


def patch_errors(features: torch.Tensor, banks: Sequence[torch.Tensor], distance: str) -> torch.Tensor:
    """Each location's error against its nearest patch of each bank ``(m_k, D)`` (filled with :func:`patches` of
    the same ``distance``): the mean squared difference over ``D`` (``euclidean``) or ``1 − cos`` (``cosine``).
    The query patches are aggregated once for all banks.

    Shapes: ``features (B, D, h, w)`` → ``(B, len(banks), h, w)``.
    """
    b, d, h, w = features.shape
    query = patches(features, distance)  # (B, h·w, D)
    scale = 2 if distance == "cosine" else d
    return torch.stack([nearest_distance(query, bank).square().view(b, h, w) / scale for bank in banks], dim=1)


def greedy_coreset(points: torch.Tensor, size: int, *, projection_dim: int = 128, seed: int = 0,
                   single_stage_work: float = SINGLE_STAGE_WORK) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``points (n, D)`` (``size`` of them).

    Distances are taken on a Gaussian random projection to ``projection_dim`` (Johnson–Lindenstrauss),
    as PatchCore does, starting from a seeded random point. Each greedy step reads all ``n`` points, so above
    ``single_stage_work`` point-steps (``n·size``; a 1 % coreset of 256 px chest radiographs is 16× that
    of 128 px) the coreset is chosen in two stages, a composable coreset: a greedy coreset of every block of
    :data:`BLOCK_ROWS` consecutive rows (an image's patches are consecutive) keeps :data:`CANDIDATES` × ``size``
    candidates, each block's in cache, and the greedy coreset of the candidates is the answer.
    """
    n = len(points)
    if size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    if points.shape[1] > projection_dim:
        proj = torch.randn(points.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        points = points @ proj
    points = points.contiguous()
    if n * size <= single_stage_work or CANDIDATES * size >= n:
        return _greedy(points, size, generator)
    share = CANDIDATES * size / n
    candidates = torch.cat([start + _greedy(block, math.ceil(share * len(block)), generator)
                            for start, block in zip(range(0, n, BLOCK_ROWS), points.split(BLOCK_ROWS), strict=True)])
    return candidates[_greedy(points[candidates], size, generator)]


def _greedy(points: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """The greedy k-center selection of ``size`` rows of ``points (n, d)``, from a random first row."""
    n = len(points)
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


def coreset_indices(points: torch.Tensor, *, seed: int, minimum: int = 1, coverage: float = COVERAGE,
                    single_stage_work: float = SINGLE_STAGE_WORK) -> torch.Tensor:
    """The rows of ``points (n, D)`` a memory keeps: a greedy coreset of ``coverage`` of them, but at least
    ``minimum`` (all of them, if fewer; every row for ``coverage`` 1). The one fill of every patch memory
    (PatchCore, the retrieval experts, an added task's memory); ``single_stage_work`` as for
    :func:`greedy_coreset`."""
    if coverage >= 1:
        return torch.arange(len(points))
    return greedy_coreset(points, min(len(points), max(minimum, int(len(points) * coverage))), seed=seed,
                          single_stage_work=single_stage_work)


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, penalty: torch.Tensor | None = None,
                     *, chunk: int | None = None) -> torch.Tensor:
    """Euclidean distance of each query ``(B, q, D)`` to its nearest row of ``bank (m, D)``: ``(B, q)``.

    ``penalty (B, m)`` is added to the squared distances (:data:`FAR` excludes a row for an image). The bank
    is searched ``chunk`` rows at a time (default: :data:`BANK_CHUNK`, fewer where ``B·q·chunk`` would pass
    :data:`PRODUCT_FLOATS`), so a large memory costs ``B·q·chunk`` floats, not ``B·q·m``.
    """
    if chunk is None:
        chunk = max(1, min(BANK_CHUNK, PRODUCT_FLOATS // max(1, queries.shape[0] * queries.shape[1])))
    q2 = queries.square().sum(dim=-1, keepdim=True)  # (B, q, 1)
    best = None
    for start in range(0, len(bank), chunk):
        rows = bank[start:start + chunk]
        d2 = q2 - 2 * queries @ rows.T + rows.square().sum(dim=1)
        if penalty is not None:
            d2 = d2 + penalty[:, None, start:start + chunk]
        nearest = d2.min(dim=-1).values
        best = nearest if best is None else torch.minimum(best, nearest)
    if best is None:
        raise ValueError("the memory is empty: fill it (fit_data) before scoring")
    return best.clamp_min(0).sqrt()


def windowed_nearest_distance(queries: torch.Tensor, memory: torch.Tensor, radius: int) -> torch.Tensor:
    """Euclidean distance of each query cell to its nearest memory patch within ``±radius`` cells of the same
    position (the SQUID/SimSID idea for aligned anatomy; cells near the border see fewer neighbours).

    The memory is laid out once per call as ``(h + 2r, w + 2r, D, n)``; then each grid row and offset is one
    batched product of that row's queries ``(w, B, D)`` with a contiguous slice of it ``(w, D, n)``, so the memory
    is copied once, not once per offset.

    Shapes: ``queries (B, h, w, D)``, ``memory (n, h, w, D)`` (every patch of ``n`` training images) →
    ``(B, h, w)``.
    """
    _, h, w, _ = queries.shape
    r = radius
    # off-grid neighbours: a zero patch at squared norm FAR, so never the nearest
    bank = F.pad(memory, (0, 0, r, r, r, r)).permute(1, 2, 3, 0).contiguous()  # (h + 2r, w + 2r, D, n)
    m2 = F.pad(memory.square().sum(dim=-1), (r, r, r, r), value=FAR).permute(1, 2, 0)  # (h + 2r, w + 2r, n)
    rows = queries.permute(1, 2, 0, 3)  # (h, w, B, D)
    q2 = rows.square().sum(dim=-1, keepdim=True)  # (h, w, B, 1)
    offsets = [(dy, dx) for dy in range(2 * r + 1) for dx in range(2 * r + 1)]
    best = [torch.stack([(q2[y] - 2 * rows[y] @ bank[y + dy, dx:dx + w] + m2[y + dy, dx:dx + w, None, :])  # (w, B, n)
                         .min(dim=-1).values for dy, dx in offsets]).min(dim=0).values
            for y in range(h)]  # h × (w, B)
    return torch.stack(best).permute(2, 0, 1).clamp_min(0).sqrt()  # (h, w, B) → (B, h, w)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` maps (reflect padding, radius 4σ)."""
    radius = max(1, int(4 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-x.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


def resize_to_stored(module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str,
                     names: Sequence[str]) -> None:
    """Give ``module``'s buffers ``names`` the shapes stored in ``state_dict`` (call from
    ``_load_from_state_dict``): a memory's size is known only once it has been filled."""
    for name in names:
        stored = state_dict.get(prefix + name)
        if stored is not None:
            setattr(module, name, torch.empty_like(stored))
