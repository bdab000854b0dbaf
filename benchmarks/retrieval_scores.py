#!/usr/bin/env python
"""How should a patch memory's distances become an image score? Decided on validation data only.

``python benchmarks/retrieval_scores.py --data ROOT`` builds, per task, a 1 % greedy-coreset memory of
the training normals' 3×3-aggregated trunk features (``the cpu-feat profile``'s trunk, stages and
resolution), on the trunk's own scale or standardised per channel, and scores validation normals
against synthetic anomalies made from them (as ``benchmarks/feature_design.py`` does, same seeds) with
five aggregations of the per-patch distances: max (PatchCore), mean (§3.5's mean of the map), mean of
squares, and the means of the largest 1 % and 10 %. No training; the test split is never loaded.
Writes ``benchmarks/results/retrieval-scores.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _trunk_data import TrunkData, parse_arguments

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(__doc__, argv)

    import numpy as np
    import torch

    from medmoe.atomic import atomic_write_text
    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.metrics import image_metrics
    from medmoe.model.feature.memory import coreset_indices, nearest_distance, patches
    from medmoe.report.tables import markdown_table

    data = TrunkData.open(args)
    config, tasks = data.config, data.tasks

    def features(split: str, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = data.images(split, task)[0]
        return images, data.features(images)

    _, all_train = zip(*(features("train", t) for t in tasks.ids), strict=False)
    stacked = torch.cat(all_train)
    mean, std = stacked.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), stacked.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    aggregations = {
        "max": lambda d: d.max(dim=1).values,
        "mean": lambda d: d.mean(dim=1),
        "mean of squares": lambda d: d.square().mean(dim=1),
        "top 1 %": lambda d: d.topk(max(1, round(0.01 * d.shape[1])), dim=1).values.mean(dim=1),
        "top 10 %": lambda d: d.topk(max(1, round(0.1 * d.shape[1])), dim=1).values.mean(dim=1),
    }
    auroc: dict[tuple[str, str], dict[str, float]] = {}
    for t, task in enumerate(tasks.ids):
        images, _ = features("val", task)
        abnormal, _ = synthesize_anomalies(images.numpy(), np.random.default_rng(args.seed * 1000 + t))
        query_images = torch.cat([images, torch.from_numpy(abnormal)])
        query = data.features(query_images, cached=False)
        labels = np.r_[np.zeros(len(images), int), np.ones(len(abnormal), int)]
        for scale in ("trunk scale", "standardised"):
            train = all_train[t] if scale == "trunk scale" else (all_train[t] - mean) / std
            q = query if scale == "trunk scale" else (query - mean) / std
            points = patches(train).flatten(0, 1)
            bank = points[coreset_indices(points, seed=args.seed)]
            dist = torch.cat([nearest_distance(patches(q[i:i + 32]), bank) for i in range(0, len(q), 32)])
            for name, aggregate in aggregations.items():
                scores = aggregate(dist).numpy()
                auroc.setdefault((scale, name), {})[task] = 100 * image_metrics(scores, labels, threshold_val=None).auroc
        print(task, flush=True)
    rows = [{"scale": scale, "score": name, **{t: f"{v[t]:.1f}" for t in tasks.ids}, "mean": f"{np.mean(list(v.values())):.1f}"}
            for (scale, name), v in auroc.items()]
    table = markdown_table(rows, [("scale", "distances on", ""), ("score", "image score", ""),
                                  *((t, t, "") for t in tasks.ids), ("mean", "mean", "")])
    text = ("# Patch-memory scores: validation AUROC (normals vs synthetic anomalies made from them)\n\n"
            f"Written by `python benchmarks/retrieval_scores.py --data ROOT --seed {args.seed}`; memory: 1 % greedy "
            f"coreset per task; {config.model.trunk}, stages {list(config.model.trunk_stages)}, "
            f"{config.model.resolution}×{config.model.resolution}. No training; the test split is never loaded.\n\n"
            f"{table}\n")
    print(text)
    atomic_write_text(REPO / "benchmarks" / "results" / "retrieval-scores.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
