#!/usr/bin/env python
"""Every speed figure the README quotes, measured on one model in one run, with the machine's load.

``python benchmarks/deployed_speed.py --model RUN [--n 100] [--repeats 2] [--calls 40] [--skip-demo]
[--sections detect latency serve demo] [--out benchmarks/results/deployed-speed.md]`` measures on RUN (the default model: a cpu-feat
``feature_moe`` run):

1. ``medmoe detect`` on ``n`` real test images (the same number per task, seeded, from the run's
   manifests), one command with one task for all: images/s with and without overlays, at ``--threads 1``
   and ``2``, median of ``--repeats`` runs, start-up and model loading included;
2. batch-1 latency of ``Detector.predict`` (one image per task in turn, ``--calls`` calls after three
   warm-ups; median and 90th percentile) with the torch and the ONNX backend at 1 and 2 threads,
   on a quiet machine and with a competing process spinning on one core (what a shared 2-core
   machine does to it);
3. ``medmoe serve`` requests/s at ``--threads 1`` and ``2``: 3 bursts of 20 simultaneous requests of one
   test image each;
4. ``medmoe demo --train`` wall time (train on phantoms, evaluate, report), unless ``--skip-demo``.

The load average before the run and the machine are printed with the numbers; the choice of the
default thread count reads the quiet and loaded latencies side by side.
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
from _serve import burst, running_server  # noqa: E402

THREADS = (1, 2)
SECTIONS = ("detect", "latency", "serve", "demo")
"""The measurements, numbered 1-4 in the module docstring."""


def _sample_images(run: Path, n: int, folder: Path) -> dict[str, list[Path]]:
    """Copy ``n`` test images of the run's tasks (seeded, equal per task) into ``folder/<task>/``."""
    import numpy as np

    from medmoe.engine.data import run_manifests

    manifests = run_manifests(run)
    tasks = sorted({s.task for m in manifests for s in m.samples})
    rng = np.random.default_rng(0)
    chosen: dict[str, list[Path]] = {}
    for task in tasks:
        rows = [(m, s) for m in manifests for s in m.select(split="test", task=task)]
        (folder / task).mkdir(parents=True)
        chosen[task] = []
        for i in rng.permutation(len(rows))[:n // len(tasks)]:
            manifest, sample = rows[i]
            source = manifest.resolve(sample.path)
            target = folder / task / f"{i}{''.join(source.suffixes)}"
            shutil.copy(source, target)
            chosen[task].append(target)
    return chosen


def _detect_seconds(folder: Path, model: Path, out: Path, *extra: str) -> float:
    """Wall seconds of one ``medmoe detect`` over every image in ``folder`` (``--task brain_mri`` for all: the
    work per image is the same whatever the task)."""
    command = [sys.executable, "-c", "from medmoe.cli import main; main()", "detect", str(folder), "--model",
               str(model), "--task", "brain_mri", "--out", str(out), "--no-progress", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"detect failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


LATENCY_SCRIPT = """
import statistics, sys, time
from pathlib import Path
from medmoe import Detector
model, backend, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
images = [(Path(p).parent.name, p) for p in sys.argv[5:]]
detector = Detector.load(model, backend=backend, threads=threads)
for task, path in images[:3]:
    detector.predict(path, task=task)
times = []
for i in range(calls):
    task, path = images[i % len(images)]
    started = time.perf_counter()
    detector.predict(path, task=task)
    times.append(1000 * (time.perf_counter() - started))
times.sort()
print(f"{statistics.median(times):.1f} {times[int(0.9 * (len(times) - 1))]:.1f}")
"""


def _latency(model: Path, backend: str, threads: int, calls: int, images: list[Path]) -> tuple[float, float]:
    """Median and p90 batch-1 latency in ms, in a fresh process (torch's thread count is process-wide)."""
    done = subprocess.run([sys.executable, "-c", LATENCY_SCRIPT, str(model), backend, str(threads), str(calls),
                           *map(str, images)], capture_output=True, text=True, check=True)
    median, p90 = done.stdout.split()
    return float(median), float(p90)


def _detect_rows(args: argparse.Namespace, work: Path, images: dict[str, list[Path]]) -> list[str]:
    """Section 1: ``medmoe detect`` images/s with and without overlays, per thread count."""
    n = sum(map(len, images.values()))
    lines = ["## `medmoe detect`", "", (f"{n} real test images ({n // len(images)} per task) in one command "
             f"(`--task brain_mri` for all), median of {args.repeats} runs, start-up and model loading "
             "included; overlays are drawn by 2 worker processes (the default: one per core)."), "",
             "| outputs | threads | wall s | images/s |", "|---|---:|---:|---:|"]
    for outputs, extra in (("overlays (default)", ()), ("no overlays", ("--no-overlays",))):
        for threads in THREADS:
            times = [_detect_seconds(work / "images", args.model, work / f"out-{len(lines)}-{r}", "--threads",
                                     str(threads), *extra) for r in range(args.repeats)]
            wall = statistics.median(times)
            lines.append(f"| {outputs} | {threads} | {wall:.1f} | {n / wall:.2f} |")
            print(lines[-1], flush=True)
    return lines


def _latency_rows(args: argparse.Namespace, work: Path, one_each: list[Path]) -> list[str]:
    """Section 2: batch-1 latency of the torch and ONNX backends, quiet and beside a spinning process."""
    from medmoe.api.export import export_onnx

    onnx = export_onnx(args.model, work / "model.onnx").onnx_path
    lines = ["## Batch-1 latency (`Detector.predict`, ms)", "",
             (f"{args.calls} calls over one image per task after 3 warm-ups, a fresh process per row; "
              "'loaded': another process spins on one core meanwhile."), "",
             "| backend | threads | quiet median | quiet p90 | loaded median | loaded p90 |",
             "|---|---:|---:|---:|---:|---:|"]
    for backend, model in (("torch", args.model), ("onnx", onnx)):
        for threads in THREADS:
            quiet = _latency(model, backend, threads, args.calls, one_each)
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                loaded = _latency(model, backend, threads, args.calls, one_each)
            finally:
                spinner.kill()
                spinner.wait()
            lines.append(f"| {backend} | {threads} | {quiet[0]:.1f} | {quiet[1]:.1f} | {loaded[0]:.1f} | "
                         f"{loaded[1]:.1f} |")
            print(lines[-1], flush=True)
    return lines


def _serve_rows(args: argparse.Namespace, image: Path) -> list[str]:
    """Section 3: ``medmoe serve`` requests/s under bursts of simultaneous requests, per thread count."""
    lines = ["## `medmoe serve`", "", ("3 bursts of 20 simultaneous `POST /v1/detect` of one brain MRI "
             "test image with its task, per thread count."), "",
             "| threads | burst | requests/s | p50 s | p95 s |", "|---:|---:|---:|---:|---:|"]
    for threads in THREADS:
        with running_server(Path(__file__).resolve().parents[1] / "src", args.model,
                            args=("--threads", str(threads))) as (url, _pid):
            burst(url, image, image.parent.name, 4)  # warm-up
            for i in range(3):
                rate, p50, p95 = burst(url, image, image.parent.name, 20)
                lines.append(f"| {threads} | {i + 1} | {rate:.2f} | {p50:.2f} | {p95:.2f} |")
                print(lines[-1], flush=True)
    return lines


def _demo_rows(work: Path) -> list[str]:
    """Section 4: ``medmoe demo --train`` wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from medmoe.cli import main; main()", "demo", "--train",
                    "--out", str(work / "demo")], capture_output=True, check=True)
    return ["## `medmoe demo --train`", "", (f"{time.perf_counter() - started:.0f} s (train on phantoms, "
            "evaluate, report; default profile).")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--skip-demo", action="store_true", help="leave out the 'demo' section")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which of the numbered measurements to run (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    sections = [s for s in args.sections if not (s == "demo" and args.skip_demo)]
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="medmoe-deployed-speed-"))
    lines: list[str] = []
    try:
        images = _sample_images(args.model, args.n, work / "images")
        one_each = [files[0] for files in images.values()]
        for section in sections:
            if section == "detect":
                lines += _detect_rows(args, work, images)
            elif section == "latency":
                lines += _latency_rows(args, work, one_each)
            elif section == "serve":
                lines += _serve_rows(args, images["brain_mri"][0] if "brain_mri" in images else one_each[0])
            else:
                lines += _demo_rows(work)
            lines.append("")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = (f"# Speed of the deployed model\n\n`python benchmarks/deployed_speed.py --model {args.model} --n {args.n} "
            f"--repeats {args.repeats} --calls {args.calls} --sections {' '.join(sections)}` on {platform.node()} "
            f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}); load average before the run "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min).\n\n" + "\n".join(lines))
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
