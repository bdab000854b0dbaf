#!/usr/bin/env python
"""Which patch memory should the retrieval experts (and the PatchCore peer) read? Chosen on validation.

``python benchmarks/patch_memory.py --data ROOT`` takes, per task, the training normals' 3×3-aggregated
trunk features (the ``cpu-feat`` profile's trunk, stages and resolution: a 16×16 grid of cells) and
scores the validation normals against synthetic anomalies made from them (the same recipe and seeds as
``benchmarks/retrieval_scores.py``) with memories that differ in

- what they keep: a 1 % greedy coreset over all positions (today's retrieval experts and PatchCore), or
  every training patch, or a 10 % greedy coreset *per cell* (the size a shipped model can hold);
- where a patch may find its neighbour: anywhere in the image, or only within ±r cells of its own
  position (the SQUID/SimSID idea: radiographs and MRI slices are roughly aligned);
- the distance: Euclidean on the trunk's scale, or cosine (on unit-normalised patches);
- the image score: the largest patch distance (PatchCore) or the mean of the largest 10 %.

The variant is chosen by its mean validation AUROC over the five tasks. Test AUROCs (the evaluated
rows of ``medmoe evaluate``'s ``primary`` view: fundus without its other-source images) are then given
for the baseline, the chosen variant and the variant fixed before this study (the issue's probe: cosine,
every patch, ±1 cell, top 10 %) — reported, never used to choose. Writes
``benchmarks/results/patch-memory.md`` and ``.json``.
"""

from __future__ import annotations

import itertools
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _trunk_data import TrunkData, parse_arguments

from medmoe.model.feature.memory import coreset_indices, greedy_coreset

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results"
CHUNK = 16
"""Query images per distance computation."""
BANK_CHUNK = 16384
"""Memory rows per distance computation (a 16-image chunk's distances then take 256 MB)."""


@dataclass(frozen=True)
class Variant:
    """One memory (see the module docstring)."""

    keep: str  # "coreset 1 %", "all", "cell coreset 10 %"
    window: int | None  # None: anywhere; r: within ±r cells
    metric: str  # "euclidean" or "cosine"

    @property
    def label(self) -> str:
        where = "anywhere" if self.window is None else f"±{self.window} cell{'s' if self.window != 1 else ''}"
        return f"{self.keep}, {where}, {self.metric}"


VARIANTS = (
    Variant("coreset 1 %", None, "euclidean"),  # today's retrieval experts and PatchCore
    Variant("coreset 1 %", None, "cosine"),
    Variant("all", None, "euclidean"),
    Variant("all", None, "cosine"),
    Variant("all", 1, "euclidean"),
    Variant("all", 1, "cosine"),
    Variant("all", 2, "cosine"),
    Variant("all", 0, "cosine"),
    Variant("cell coreset 10 %", 1, "cosine"),
    Variant("cell coreset 10 %", 1, "euclidean"),
)
BASELINE, PROBE = VARIANTS[0], Variant("all", 1, "cosine")
SCORES = ("max", "top 10 %")


def memory(train: torch.Tensor, variant: Variant, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept patches ``(m, D)`` and their cells ``(m,)`` (row-major index on the grid)."""
    n, h, w, d = train.shape
    cells = torch.arange(h * w).repeat(n)
    points = train.reshape(-1, d)
    if variant.keep == "coreset 1 %":
        kept = coreset_indices(points, seed=seed)
    elif variant.keep == "all":
        kept = torch.arange(len(points))
    else:  # a coreset of each cell's patches
        by_cell = train.reshape(n, h * w, d)
        kept = torch.cat([greedy_coreset(by_cell[:, c], max(1, n // 10), seed=seed + c) * (h * w) + c
                          for c in range(h * w)])
    return points[kept], cells[kept]


def distances(query: torch.Tensor, train: torch.Tensor, variant: Variant, seed: int) -> tuple[torch.Tensor, int]:
    """Each query patch's distance to its nearest allowed memory patch ``(n, h·w)``, and how many patches the
    memory kept."""
    if variant.metric == "cosine":
        query, train = F.normalize(query, dim=-1), F.normalize(train, dim=-1)
    if variant.keep == "all" and variant.window is not None:
        dist = torch.cat([shifted(query[i:i + CHUNK], train, variant.window) for i in range(0, len(query), CHUNK)])
        return dist, train.shape[:3].numel()
    n, h, w, d = query.shape
    bank, cells = memory(train, variant, seed)
    q = query.reshape(n, h * w, d)
    allowed = None
    if variant.window is not None:
        qy, qx, my, mx = torch.arange(h * w) // w, torch.arange(h * w) % w, cells // w, cells % w
        r = variant.window
        allowed = ((qy[:, None] - my[None]).abs() <= r) & ((qx[:, None] - mx[None]).abs() <= r)
    out = []
    for i in range(0, n, CHUNK):
        block = q[i:i + CHUNK]
        best = torch.full(block.shape[:2], float("inf"))
        for j in range(0, len(bank), BANK_CHUNK):
            part = bank[j:j + BANK_CHUNK]
            d2 = block.square().sum(-1, keepdim=True) - 2 * block @ part.T + part.square().sum(-1)
            if allowed is not None:
                d2 = d2.masked_fill(~allowed[None, :, j:j + BANK_CHUNK], float("inf"))
            best = torch.minimum(best, d2.min(dim=-1).values)
        out.append(best.clamp_min(0).sqrt())
    return torch.cat(out), len(bank)


def shifted(query: torch.Tensor, train: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`distances` against every training patch within ±r cells, one offset at a time:
    ``query (b, h, w, D)``, ``train (N, h, w, D)`` → ``(b, h·w)``."""
    b, h, w, _ = query.shape
    best = torch.full((b, h, w), float("inf"))
    for dy, dx in itertools.product(range(-r, r + 1), repeat=2):
        ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
        q = query[:, ys, xs].permute(1, 2, 0, 3)  # (h', w', b, D)
        m = train[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)].permute(1, 2, 3, 0)  # (h', w', D, N)
        d2 = q.square().sum(-1, keepdim=True) - 2 * (q @ m) + m.square().sum(2, keepdim=True)  # (h', w', b, N)
        best[:, ys, xs] = torch.minimum(best[:, ys, xs], d2.min(dim=-1).values.permute(2, 0, 1))
    return best.flatten(1).clamp_min(0).sqrt()


def score(dist: torch.Tensor, how: str) -> np.ndarray:
    """Image scores ``(n,)`` of patch distances ``(n, h·w)``."""
    if how == "max":
        return dist.max(dim=1).values.numpy()
    return dist.topk(max(1, round(0.1 * dist.shape[1])), dim=1).values.mean(dim=1).numpy()


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)

    from medmoe.atomic import atomic_write_text
    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.engine.evaluate import VARIANTS as VIEWS
    from medmoe.metrics import image_metrics
    from medmoe.model.feature.memory import patches
    from medmoe.report.tables import markdown_table

    data = TrunkData.open(args)
    config, tasks = data.config, data.tasks

    def grid(images: torch.Tensor, cached: bool) -> torch.Tensor:
        """Aggregated patches on their grid: ``(n, h, w, D)``."""
        feats = data.features(images, cached=cached).float()
        b, _, h, w = feats.shape
        return patches(feats).view(b, h, w, -1)

    val: dict[tuple[Variant, str], dict[str, float]] = {}
    test: dict[tuple[Variant, str], dict[str, float]] = {}
    seconds: dict[Variant, float] = {}
    sizes: dict[Variant, dict[str, int]] = {}
    queries: dict[str, tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]] = {}
    trains: dict[str, torch.Tensor] = {}
    for t, task in enumerate(tasks.ids):
        trains[task] = grid(data.images("train", task)[0], cached=True)
        images, _ = data.images("val", task)
        abnormal, _ = synthesize_anomalies(images.numpy(), np.random.default_rng(args.seed * 1000 + t))
        val_query = grid(torch.cat([images, torch.from_numpy(abnormal)]), cached=False)
        val_labels = np.r_[np.zeros(len(images), int), np.ones(len(abnormal), int)]
        test_images, test_labels = data.images("test", task, excluded=VIEWS["primary"])
        queries[task] = (val_query, val_labels, grid(test_images, cached=True), test_labels)
        print(f"{task}: {len(trains[task])} training normals, {len(images)} validation normals, "
              f"{len(test_labels)} test images", flush=True)

    def run(variant: Variant, split: str) -> None:
        start = time.perf_counter()
        for task in tasks.ids:
            query, labels = queries[task][:2] if split == "val" else queries[task][2:]
            dist, kept = distances(query, trains[task], variant, args.seed)
            sizes.setdefault(variant, {})[task] = kept
            for how in SCORES:
                metrics = image_metrics(score(dist, how), labels, threshold_val=None)
                (val if split == "val" else test).setdefault((variant, how), {})[task] = 100 * metrics.auroc
        if split == "val":
            seconds[variant] = time.perf_counter() - start
        print(f"{split} {variant.label}: {time.perf_counter() - start:.0f} s", flush=True)

    for variant in VARIANTS:
        run(variant, "val")
    chosen = max(val, key=lambda key: np.mean(list(val[key].values())))
    for variant in dict.fromkeys([BASELINE, chosen[0], PROBE]):
        run(variant, "test")

    def rows(results: dict[tuple[Variant, str], dict[str, float]]) -> list[dict[str, str]]:
        return [{"memory": v.label, "score": how, **{t: f"{r[t]:.1f}" for t in tasks.ids},
                 "mean": f"{np.mean(list(r.values())):.1f}",
                 "patches": f"{int(np.mean(list(sizes[v].values()))):,}", "seconds": f"{seconds[v]:.0f}"}
                for (v, how), r in results.items()]

    columns = [("memory", "memory", ""), ("score", "image score", ""), *((t, t, "") for t in tasks.ids),
               ("mean", "mean", ""), ("patches", "patches per task (mean)", ""),
               ("seconds", "s, all val tasks", "")]
    note = (f"`{sys.executable.split('/')[-1]} benchmarks/patch_memory.py --data ROOT --seed {args.seed} "
            f"--threads {args.threads}` on {platform.machine()} ({torch.get_num_threads()} threads), "
            f"{config.model.trunk}, stages {list(config.model.trunk_stages)}, "
            f"{config.model.resolution}×{config.model.resolution} (a 16×16 grid of cells). No training.")
    text = ("# Patch memories: validation AUROC (normals vs synthetic anomalies made from them)\n\n"
            f"{note}\n\n{markdown_table(rows(val), columns)}\n\n"
            f"Chosen on validation: **{chosen[0].label}, {chosen[1]}**.\n\n"
            "## Test AUROC of the baseline, the chosen variant and the probe fixed beforehand\n\n"
            "Reported, not used to choose. Fundus: the same-source rows (`medmoe evaluate`'s primary view).\n\n"
            f"{markdown_table(rows(test), columns)}\n")
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "patch-memory.md", text)
    record = {"settings": note, "chosen": [chosen[0].label, chosen[1]],
              "validation": {f"{v.label} | {how}": r for (v, how), r in val.items()},
              "test": {f"{v.label} | {how}": r for (v, how), r in test.items()},
              "seconds": {v.label: s for v, s in seconds.items()}}
    atomic_write_text(OUT / "patch-memory.json", json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
