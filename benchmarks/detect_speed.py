#!/usr/bin/env python
"""``medmoe detect`` throughput on real images with its default outputs, before and after a change.

``python benchmarks/detect_speed.py --model RUN [--before COMMIT] [--n 100] [--repeats 2]
[--out benchmarks/results/detect-speed.md]`` copies ``n`` test images of the run's tasks (the same
number per task, seeded; from the run's manifests) to a temporary folder and runs ``medmoe detect``
on them with the task given and every other option at its default, ``--repeats`` times each: this
checkout, and (with ``--before``) the given commit checked out in a temporary git worktree, run with
the same virtual environment. It reports the median wall time of the whole command (model loading
included), images/s and the size of what was written. Use a run both versions can load (one without
trust outputs, e.g. ``benchmarks/results/cpu-feat/runs/patchcore/seed0/all``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402
from _versions import source_trees  # noqa: E402


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run(src: Path, images: Path, model: Path, task: str, out: Path) -> float:
    """Wall seconds of one ``medmoe detect`` with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-c", "from medmoe.cli import main; main()", "detect", str(images), "--model",
               str(model), "--task", task, "--out", str(out), "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"detect failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--before", help="a commit to compare with")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--task", default="brain_mri", help="the task given to detect for every image")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import numpy as np

    from medmoe.engine.data import run_manifests

    manifests = run_manifests(args.model)
    tasks = sorted({s.task for m in manifests for s in m.samples})
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="medmoe-speed-"))
    images = work / "images"
    images.mkdir()
    per_task = args.n // len(tasks)
    for task in tasks:
        rows = [(m, s) for m in manifests for s in m.select(split="test", task=task)]
        for i in rng.permutation(len(rows))[:per_task]:
            manifest, sample = rows[i]
            source = manifest.resolve(sample.path)
            shutil.copy(source, images / f"{task}_{i}{''.join(source.suffixes)}")
    n = len(list(images.iterdir()))
    rows = []
    try:
        with source_trees(args.before, work) as versions:
            for label, src in versions.items():
                times, size = [], 0
                for repeat in range(args.repeats):
                    out = work / f"out-{len(rows)}-{repeat}"
                    times.append(_run(src, images, args.model, args.task, out))
                    size = _folder_size(out)
                median = statistics.median(times)
                rows.append(f"| {label} | {median:.1f} | {n / median:.2f} | {size / 1e6:.1f} |")
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = (f"# `medmoe detect` throughput\n\n`python benchmarks/detect_speed.py --model {args.model} "
            f"--before {args.before} --n {args.n} --repeats {args.repeats}` on {platform.node()} "
            f"({os.cpu_count()} CPUs); {n} real test images ({per_task} per task), default outputs, "
            f"median of {args.repeats} runs, model loading included.\n\n"
            "| version | wall s | images/s | output MB |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
