#!/usr/bin/env python
"""Does a finer feature grid find more? Image resolution 128 against 256 for the patch memories, chosen on validation.

``python benchmarks/grid_resolution.py --data ROOT --resolutions 128 256`` reads every task's images at each
resolution through the ``cpu-feat`` profile's trunk and stages (EfficientNet-Lite0, stages 2 + 4 at stride 8:
a 16×16 grid of cells at 128 px, 32×32 at 256 px), aggregates 3×3 patches at unit length, and scores

- validation normals against synthetic anomalies made from them (the seeds of
  ``benchmarks/patch_memory.py``): image AUROC, and pixel AUROC against the synthetic lesion masks;
- the test split (``medmoe evaluate``'s primary view): image AUROC, and pixel AUROC where the task has
  lesion masks (BUSI) — reported, never used to choose;

with two cosine memories of the task's training normals:

- **every patch, ±r cells** of the query's position, r covering the same image area at each resolution
  (±1 cell at 16×16, ±2 at 32×32: the position-aware peer of the issue's probe);
- **a 1 % greedy coreset, anywhere** (what ``feature_moe``'s retrieval experts keep: above two billion
  point-steps, a two-stage coreset, :func:`~medmoe.model.feature.memory.greedy_coreset`);
- with ``--memories``, also **the same coreset in one greedy pass** over every patch (the two-stage coreset's
  reference: what it costs and whether it loses anything);

and two image scores: the largest patch distance and the mean of the largest 10 %. Pixel maps are the patch
distances upsampled bilinearly to the image and blurred (Gaussian, σ = 4 px at 256 px, PatchCore's).
No training. Writes ``benchmarks/results/grid-resolution.md`` and ``.json`` (``--out`` names them), with the seconds each
step took on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _trunk_data import TrunkData
from patch_memory import score as image_score

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results"
SCORES = ("max", "top 10 %")
MEMORIES = ("every patch, ±r cells", "coreset 1 %, anywhere", "coreset 1 %, anywhere, one pass")


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[], help="data root or manifests (default: $MEDMOE_DATA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: every task of the data)")
    parser.add_argument("--memories", nargs="+", type=int, default=[0, 1],
                        help=f"which memories, by index: {', '.join(f'{i}: {m}' for i, m in enumerate(MEMORIES))}")
    parser.add_argument("--colour", nargs="+", default=[], metavar="TASK",
                        help="tasks read in colour, through the trunk's own RGB stem (default: every task gray)")
    parser.add_argument("--out", default="grid-resolution", help="name of the .md/.json written to benchmarks/results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)

    from medmoe.atomic import atomic_write_text
    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.data.dataset import ImageDataset
    from medmoe.engine.evaluate import VARIANTS as VIEWS
    from medmoe.metrics import image_metrics, pixel_metrics
    from medmoe.model.feature.memory import (
        SINGLE_STAGE_WORK,
        coreset_indices,
        gaussian_blur,
        nearest_distance,
        patches,
        windowed_nearest_distance,
    )
    from medmoe.report.tables import markdown_table
    from medmoe.tasks import TaskRegistry

    data = TrunkData.open(args)
    task_ids = args.tasks or list(data.tasks.ids)
    tasks = TaskRegistry(replace(t, channels=3) if t.id in args.colour else t for t in data.tasks)

    def load(split: str, task: str, resolution: int, excluded: tuple[str, ...] = ()) -> tuple[torch.Tensor, ...]:
        """Images ``(n, C, R, R)``, labels ``(n,)``, masks ``(n, 1, R, R)``, has-mask ``(n,)``."""
        samples = [(m, s) for m in data.manifests for s in m.select(split=split, task=task, exclude_flags=excluded)]
        batch = ImageDataset(samples, tasks, resolution=resolution, cache_dir=data.cache, with_masks=True,
                             channels=3 if task in args.colour else 1).materialize(progress=False)
        return batch.images, batch.labels, batch.masks, batch.has_mask

    def grid(images: torch.Tensor, cached: bool) -> torch.Tensor:
        feats = data.features(images, cached=cached).float()
        b, _, h, w = feats.shape
        return patches(feats, "cosine").view(b, h, w, -1)

    def pixel_auroc(dist: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor, labels: torch.Tensor) -> float:
        """Pooled pixel AUROC over the normals and the abnormal images with a mask (``nan`` without masks)."""
        keep = (labels == 0) | has_mask
        if not bool(has_mask.any()):
            return float("nan")
        side, size = int(round(dist.shape[1]**0.5)), masks.shape[-1]
        maps = F.interpolate(dist[keep].view(-1, 1, side, side), size=(size, size), mode="bilinear",
                             align_corners=False)
        maps = gaussian_blur(maps, 4 * size / 256)
        return 100 * pixel_metrics(maps[:, 0].numpy(), masks[keep][:, 0].numpy() > 0.5).pixel_auroc

    rows: list[dict[str, object]] = []
    costs: list[dict[str, object]] = []
    for resolution in args.resolutions:
        for t, task in enumerate(data.tasks.ids):
            if task not in task_ids:
                continue
            train_images = load("train", task, resolution)[0]
            val_images = load("val", task, resolution)[0]
            test_images, test_labels, test_masks, test_has = load("test", task, resolution, VIEWS["primary"])
            loaded = time.perf_counter()
            train = grid(train_images, cached=True)
            abnormal, lesion = synthesize_anomalies(val_images.numpy(), np.random.default_rng(args.seed * 1000 + t))
            val = grid(torch.cat([val_images, torch.from_numpy(abnormal)]), cached=False)
            test = grid(test_images, cached=True)
            n_images = len(train_images) + 2 * len(val_images) + len(test_images)
            extracted = time.perf_counter()
            val_labels = torch.cat([torch.zeros(len(val_images), dtype=torch.long),
                                    torch.ones(len(abnormal), dtype=torch.long)])
            val_masks = torch.cat([torch.zeros_like(val_images[:, :1]), torch.from_numpy(lesion).float()])
            splits = {"val": (val, val_labels, val_masks, val_labels == 1),
                      "test": (test, test_labels, test_masks, test_has)}
            side = train.shape[1]
            radius = max(1, round(side / 16))
            print(f"{task} at {resolution} px ({side}×{side} cells): {len(train)} training normals, "
                  f"{len(val_images)} validation normals, {len(test_labels)} test images; "
                  f"{n_images / (extracted - loaded):.1f} images/s through the trunk", flush=True)
            for memory in (MEMORIES[i] for i in args.memories):
                began = time.perf_counter()
                if memory != MEMORIES[0]:
                    points = train.flatten(0, 2)
                    one_pass = math.inf if memory == MEMORIES[2] else SINGLE_STAGE_WORK
                    bank = points[coreset_indices(points, seed=args.seed, single_stage_work=one_pass)]
                    costs.append({"resolution": resolution, "task": task, "memory": f"{memory}: selection",
                                  "seconds": time.perf_counter() - began})
                for split, (query, labels, masks, has_mask) in splits.items():
                    # Euclidean between unit vectors: sqrt(2 − 2 cos)
                    if memory == MEMORIES[0]:
                        dist = windowed_nearest_distance(query, train, radius).flatten(1)
                    else:
                        dist = torch.cat([nearest_distance(query[i:i + 64].flatten(1, 2), bank)
                                          for i in range(0, len(query), 64)])
                    pixel = pixel_auroc(dist, masks, has_mask, labels)
                    for how in SCORES:
                        auroc = 100 * image_metrics(image_score(dist, how), labels.numpy(), threshold_val=None).auroc
                        rows.append({"resolution": resolution, "task": task, "memory": memory, "score": how,
                                     "split": split, "image_auroc": auroc, "pixel_auroc": pixel})
                        print(f"  {memory}, {how}, {split}: image {auroc:.1f}, pixel {pixel:.1f}", flush=True)
                costs.append({"resolution": resolution, "task": task, "memory": memory,
                              "seconds": time.perf_counter() - began})
            costs.append({"resolution": resolution, "task": task, "memory": "trunk features",
                          "seconds": extracted - loaded, "images_per_s": n_images / (extracted - loaded)})

    def table(split: str, value: str) -> str:
        keys = sorted({(r["memory"], r["score"], r["resolution"]) for r in rows},
                      key=lambda k: (MEMORIES.index(str(k[0])), SCORES.index(str(k[1])), k[2]))
        out = []
        for memory, how, resolution in keys:
            cells = {str(r["task"]): r[value] for r in rows
                     if (r["memory"], r["score"], r["resolution"], r["split"]) == (memory, how, resolution, split)}
            finite = [float(v) for v in cells.values() if v == v]  # type: ignore[comparison-overlap]
            out.append({"memory": f"{memory}, {how}", "resolution": f"{resolution} px", **cells,
                        "mean": float(np.mean(finite)) if finite else float("nan")})
        columns = [("memory", "memory, image score", ""), ("resolution", "resolution", ""),
                   *((t, t, ".1f") for t in task_ids), ("mean", "mean", ".1f")]
        return markdown_table(out, columns)

    note = (f"`python benchmarks/grid_resolution.py --data ROOT --seed {args.seed} --threads {args.threads} "
            f"--resolutions {' '.join(map(str, args.resolutions))} --memories {' '.join(map(str, args.memories))}"
            f"{' --tasks ' + ' '.join(task_ids) if args.tasks else ''}"
            f"{' --colour ' + ' '.join(args.colour) if args.colour else ''} --out {args.out}` on {platform.machine()} "
            f"({torch.get_num_threads()} threads), {data.config.model.trunk}, stages "
            f"{list(data.config.model.trunk_stages)}, cosine patches. No training.")
    text = ("# Feature grid resolution: validation AUROC (normals vs synthetic anomalies made from them)\n\n"
            f"{note}\n\n## Validation, image AUROC\n\n{table('val', 'image_auroc')}\n"
            f"## Validation, pixel AUROC (synthetic lesion masks)\n\n{table('val', 'pixel_auroc')}\n"
            "## Test, image AUROC (reported, not used to choose; fundus: same-source rows)\n\n"
            f"{table('test', 'image_auroc')}\n"
            "## Test, pixel AUROC (tasks with lesion masks; reported, not used to choose)\n\n"
            f"{table('test', 'pixel_auroc')}\n"
            "## Cost on this machine\n\nA memory's row: building it and searching validation and test; "
            "its *selection* row: the coreset's selection alone.\n\n"
            + markdown_table([{**c, "seconds": float(c["seconds"])} for c in costs],  # type: ignore[arg-type]
                             [("task", "task", ""), ("resolution", "resolution", "d"), ("memory", "step", ""),
                              ("seconds", "seconds", ".0f"), ("images_per_s", "images/s", ".1f")]))
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"{args.out}.md", text)
    atomic_write_text(OUT / f"{args.out}.json",
                      json.dumps({"settings": note, "rows": rows, "costs": costs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
