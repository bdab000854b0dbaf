#!/usr/bin/env python
"""Does smoothing a trained model's anomaly maps put more of the heat on the lesion? Pixel AUROC against σ.

``python benchmarks/map_smoothing.py --data ROOT --run RUN [--sigmas 0 2 4 8 16] [--tasks breast_us]``
scores a trained run's maps, blurred with a Gaussian of each ``σ`` (in pixels of the model's ``R × R``
map; :func:`~medmoe.model.feature.memory.gaussian_blur`), as pixel AUROC over every image of the set:

- **validation** (chooses): each task's validation normals and synthetic anomalies made from them, with
  their lesion masks (:func:`~medmoe.data.anomalies.synthesize_anomalies`, seeded as in
  ``feature_design.py``); ``--areas`` sets the synthetic lesions' share of the image (default: the
  generator's own);
- **test** (reported, never used to choose): the test images whose lesion mask is known (the abnormal
  images with a mask, and every normal), as ``medmoe evaluate`` pools them.

It prints one table and writes it to ``benchmarks/results/map-smoothing.md`` (``--out``), with the run, the
machine and the command.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

from _output import emit

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[], help="data root or manifests (default: $MEDMOE_DATA)")
    parser.add_argument("--run", required=True, help="the trained run (or model) whose maps are scored")
    parser.add_argument("--tasks", nargs="+", default=["breast_us"], help="tasks whose test images have masks")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--areas", nargs=2, type=float, default=None, metavar=("MIN", "MAX"),
                        help="synthetic lesions' share of the image (default: the generator's)")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed and the synthetic anomalies'")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "map-smoothing.md")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.data.dataset import ImageDataset
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.config import DataConfig
    from medmoe.engine.data import default_cache_dir, resolve_data
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.inference import predict, task_text_embeddings
    from medmoe.metrics import pixel_metrics
    from medmoe.model.feature.memory import gaussian_blur

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.run)
    manifests = resolve_data(args.data, seed=args.seed, val_fraction=DataConfig().val_fraction)
    model, tasks = checkpoint.model, checkpoint.tasks
    resolution = checkpoint.config.model.resolution

    def maps(images: torch.Tensor, task: int) -> torch.Tensor:
        """The run's anomaly maps ``(n, 1, R, R)`` of ``images (n, C, R, R)`` read as ``task``."""
        inputs = prepared_inputs(model, images, cache_dir=None, progress=False)
        text = task_text_embeddings(checkpoint.prompt_embeddings, torch.full((len(images),), task))
        amaps = predict(model, inputs, text, keep_maps=True, prepared=True).anomaly_map  # (n, R, R)
        return torch.from_numpy(amaps).view(len(images), 1, resolution, resolution)

    def pixel_aurocs(amaps: torch.Tensor, masks: np.ndarray) -> list[float]:
        return [100 * pixel_metrics((gaussian_blur(amaps, s) if s > 0 else amaps)[:, 0].numpy(), masks).pixel_auroc
                for s in args.sigmas]

    rows = []
    for task_id in args.tasks:
        t = tasks.ids.index(task_id)
        for split in ("val", "test"):
            entries = [(m, s) for m in manifests for s in m.select(split=split, task=task_id)]
            if split == "test":  # abnormal images without a mask would count their lesion as normal
                entries = [(m, s) for m, s in entries if s.label == 0 or s.mask]
            batch = ImageDataset(entries, tasks, resolution=resolution, cache_dir=default_cache_dir(),
                                 with_masks=split == "test",
                                 channels=checkpoint.config.model.in_channels).materialize(progress=False)
            if split == "val":
                normal = batch.images.numpy()
                kw = {} if args.areas is None else {"area": tuple(args.areas)}
                abnormal, lesions = synthesize_anomalies(normal, np.random.default_rng(args.seed * 1000 + t), **kw)
                images = torch.cat([batch.images, torch.from_numpy(abnormal)])
                masks = np.concatenate([np.zeros_like(lesions), lesions])[:, 0]
            else:
                images, masks = batch.images, batch.masks.numpy()[:, 0] > 0.5
            aurocs = pixel_aurocs(maps(images, t), masks)
            rows.append((task_id, split, len(images), int(masks.reshape(len(masks), -1).any(axis=1).sum()), aurocs))
            print(task_id, split, " ".join(f"σ={s:g}: {a:.1f}" for s, a in zip(args.sigmas, aurocs, strict=True)),
                  flush=True)

    area = "the generator's" if args.areas is None else f"{args.areas[0]:g}–{args.areas[1]:g} of the image"
    lines = [f"# Pixel AUROC of smoothed anomaly maps: `{args.run}`", "",
             (f"`python benchmarks/map_smoothing.py {shlex.join(sys.argv[1:] if argv is None else argv)}` on "
             f"{platform.machine()} ({torch.get_num_threads()} threads). Maps at {resolution}×{resolution}, blurred with a Gaussian "
             f"of σ pixels (0: as the model gives them). Validation: normals and synthetic lesions ({area}) made "
             "from them (chooses); test: normals and abnormal images with a mask (reported, never used to choose)."),
             "", "| task | split | images | with a lesion | " + " | ".join(f"σ = {s:g}" for s in args.sigmas) + " |",
             "|---|---|---:|---:|" + "---:|" * len(args.sigmas)]
    for task_id, split, n, with_lesion, aurocs in rows:
        best = max(aurocs)
        cells = [f"**{a:.1f}**" if a == best else f"{a:.1f}" for a in aurocs]
        lines.append(f"| {task_id} | {split} | {n} | {with_lesion} | " + " | ".join(cells) + " |")
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    sys.exit(main())
