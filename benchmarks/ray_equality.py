#!/usr/bin/env python
"""The Ray engine writes the single process's rows: real test images of every task, both ways, compared cell by cell.

``python benchmarks/ray_equality.py --model RUN [--n 250] [--actors 2] [--out benchmarks/results/ray-equality.md]``
takes ``n`` real test images (the same number per task, seeded, from RUN's manifests), scores each task's images
with :func:`~medmoe.api.batch.detect_files` (one process) and :func:`~medmoe.api.ray_batch.score_on_ray` (a local
Ray, ``--actors`` replicas, one Ray session for all tasks), and compares every cell of ``results.csv``: numbers
(and lists of them) within 1e-5 relative, text equal. Batches differ between the two, so float round-off may
differ in the last digits; decisions, p-values and flags must not.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402
from ray_speed import _copy_images, _differences, _rows  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder with manifests (the images come from them)")
    parser.add_argument("--n", type=int, default=250)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from medmoe.api.batch import DetectOptions, detect_files
    from medmoe.api.detector import Detector
    from medmoe.api.inputs import collect_inputs
    from medmoe.api.ray_batch import RaySettings, score_on_ray
    from medmoe.engine.data import run_manifests

    model = Path(args.model)
    tasks = sorted({s.task for m in run_manifests(model) for s in m.samples})
    detector = Detector.load(model, threads=1)
    lines = ["| task | images | cells compared | cells that differ |", "| --- | ---: | ---: | --- |"]
    total = 0
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as work:
            for task in tasks:
                images = _copy_images(model, task, args.n // len(tasks), Path(work) / task / "images")
                inputs = collect_inputs([images[0].parent]).items
                options = DetectOptions(task=task, batch_size=32)
                for engine in ("local", "ray"):
                    (Path(work) / task / engine).mkdir()
                detect_files(detector, inputs, Path(work) / task / "local", options)
                score_on_ray(detector, model, inputs, Path(work) / task / "ray", options,
                             RaySettings(actors=args.actors))
                ours, theirs = _rows(Path(work) / task / "ray"), _rows(Path(work) / task / "local")
                differing = _differences(ours, theirs)
                cells = sum(len(r) for r in theirs.values())
                total += len(theirs)
                lines.append(f"| {task} | {len(theirs)} | {cells} | {', '.join(differing) or 'none'} |")
                print(lines[-1], flush=True)
    finally:
        ray.shutdown()
    text = (f"# The Ray engine against the single process\n\n`python benchmarks/ray_equality.py --model {args.model} "
            f"--n {args.n} --actors {args.actors}` on {platform.node()} ({os.cpu_count()} CPUs): {total} real test "
            "images; numbers within 1e-5 relative, text equal.\n\n" + "\n".join(lines) + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
