#!/usr/bin/env python
"""How well do image statistics alone separate normal from abnormal test images? A no-learning check.

``python benchmarks/shortcuts.py --data ROOT [--resolution 64] [--seed 0]`` scores every test image of
each task with three statistics of the preprocessed image the models see, and prints and writes
``benchmarks/results/shortcuts-<resolution>.md`` with their AUROC (not flipped: below 50 means the
abnormal images have *less* of it):

- ``mean``: mean intensity; ``std``: intensity standard deviation;
- ``detail``: mean squared difference to a 3×3 box blur (fine texture, edges, noise) — what an
  under-trained autoencoder fails to reconstruct, so its error follows this statistic.

An AUROC far from 50 for a statistic is a shortcut in the data that a reconstruction score can ride on,
in either direction. The primary view is used (fundus without its other-source glaucoma images).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATISTICS = ("mean", "std", "detail")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[], help="data root or manifests (default: $MEDMOE_DATA)")
    parser.add_argument("--resolution", type=int, default=64, help="preprocessing resolution (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the seeded splits (default 0)")
    parser.add_argument("--out", type=Path, help="Markdown file (default benchmarks/results/shortcuts-<resolution>.md)")
    args = parser.parse_args(argv)

    import torch.nn.functional as F

    from medmoe.atomic import atomic_write_text
    from medmoe.data.dataset import ImageDataset
    from medmoe.engine.config import DataConfig
    from medmoe.engine.data import default_cache_dir, resolve_data
    from medmoe.errors import MedmoeError
    from medmoe.metrics import image_metrics
    from medmoe.report.tables import markdown_table
    from medmoe.tasks import default_registry

    try:
        manifests = resolve_data(args.data, seed=args.seed, val_fraction=DataConfig().val_fraction)
        tasks = default_registry()
        rows = []
        for task in tasks.ids:
            entries = [(m, s) for m in manifests for s in m.select(split="test", task=task, exclude_flags=("other_source",))]
            if not entries:
                continue
            batch = ImageDataset(entries, tasks, resolution=args.resolution, cache_dir=default_cache_dir(),
                                 with_masks=False).materialize(progress=False)
            x = batch.images.float()  # (B, C, R, R) in [0, 1]
            detail = (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)).square()
            scores = {"mean": x.mean(dim=(1, 2, 3)), "std": x.flatten(1).std(dim=1), "detail": detail.mean(dim=(1, 2, 3))}
            labels = batch.labels.numpy()
            row = {"task": task, "n": f"{int((labels == 0).sum())} / {int((labels == 1).sum())}"}
            row.update({s: f"{100 * image_metrics(scores[s].numpy(), labels, threshold_val=None).auroc:.2f}" for s in STATISTICS})
            rows.append(row)
    except MedmoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(rows, [("task", "Task", ""), ("n", "test normal / abnormal", ""),
                                  *((s, f"AUROC of {s}", "") for s in STATISTICS)])
    text = "\n".join([
        f"# Image statistics as anomaly scores ({args.resolution}×{args.resolution}, no learning)",
        "",
        f"- Command: `python benchmarks/shortcuts.py --data $MEDMOE_DATA --resolution {args.resolution} --seed {args.seed}`",
        f"- Written {datetime.now(UTC).isoformat(timespec='seconds')}; seed {args.seed} (seeded splits).",
        "- AUROC in percent, not flipped: below 50, abnormal images have less of the statistic than normals.",
        "- `detail`: mean squared difference to a 3×3 box blur of the preprocessed image.",
        "",
        table,
        "",
    ])
    out = args.out or REPO / "benchmarks" / "results" / f"shortcuts-{args.resolution}.md"
    atomic_write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
