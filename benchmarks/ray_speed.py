#!/usr/bin/env python
"""Images/s of ``medmoe detect`` on one process and on Ray with 1 and 2 model replicas, in one run, side by side.

``python benchmarks/ray_speed.py --model RUN [--task brain_mri] [--n 200] [--repeats 2]
[--out benchmarks/results/ray-speed.md]`` copies ``n`` real test images of one task (seeded, from RUN's
manifests), then times, in turn and ``--repeats`` times each, one ``medmoe detect`` command over all of them
(start-up, model load and Ray's start included, overlays on), as an archive is screened:

- ``--engine local`` (the single-process path, its default threads and overlay workers);
- ``--engine ray --actors 1`` and ``--actors 2`` (a local Ray on this machine's cores, started by the command);
- the same with ``--address auto``, joining a Ray cluster started before them (``ray start --head``), so
  that Ray's own start is not in those timings.

It reports the median images/s of each, the ratio of 2 replicas over 1, the per-image time Ray adds over the
single process at one replica, the rows' equality (scores within 1e-5 relative, every other column equal), and
what a 10-million-image archive would cost on 100 such nodes at the measured rate (on paper: the measured
per-image cost times the count, no cluster overheads beyond those measured here).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402


def _copy_images(run: Path, task: str, n: int, folder: Path) -> list[Path]:
    """``n`` test images of ``task`` from the run's manifests (seeded), copied into ``folder``."""
    import shutil

    import numpy as np

    from medmoe.engine.data import run_manifests

    rows = [(m, s) for m in run_manifests(run) for s in m.select(split="test", task=task)]
    folder.mkdir(parents=True)
    copied = []
    for i in np.random.default_rng(0).permutation(len(rows))[:n]:
        manifest, sample = rows[i]
        copied.append(folder / f"{len(copied):04d}{Path(sample.path).suffix}")
        shutil.copyfile(manifest.resolve(sample.path), copied[-1])
    return copied


def _detect(model: str, task: str, images: Path, out: Path, engine: list[str]) -> float:
    """Seconds of one ``medmoe detect`` command over the folder ``images``."""
    medmoe = str(Path(sys.executable).with_name("medmoe"))
    started = time.perf_counter()
    subprocess.run([medmoe, "detect", str(images), "--task", task, "--model", model, "--out", str(out),
                    "--no-progress", *engine], check=True, capture_output=True)
    return time.perf_counter() - started


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return {r["source"]: r for r in csv.DictReader(handle)}


def _cells_agree(a: str, b: str) -> bool:
    """Two cells of ``results.csv`` agree: numbers (and lists of them) within 1e-5 relative, text equal."""
    try:
        x, y = [float(v) for v in a.split()], [float(v) for v in b.split()]
    except ValueError:
        return a == b
    return len(x) == len(y) and all(abs(p - q) <= 1e-5 * max(abs(p), abs(q), 1e-6) for p, q in zip(x, y, strict=True))


def _differences(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> list[str]:
    """``source: column`` of every cell where two runs' rows disagree (rows missing on either side too)."""
    found = [f"{key}: missing" for key in a.keys() ^ b.keys()]
    return found + [f"{key}: {column}" for key in a.keys() & b.keys() for column in a[key]
                    if not _cells_agree(a[key][column], b[key][column])]


def _ray(*args: str) -> None:
    """Run the ``ray`` command (``ray start --head`` starts a local cluster that ``--address auto`` joins)."""
    subprocess.run([str(Path(sys.executable).with_name("ray")), *args], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder with manifests (the images come from them)")
    parser.add_argument("--task", default="brain_mri", help="the task whose test images are screened")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    variants = {"local": ["--engine", "local"], "ray, 1 replica": ["--engine", "ray", "--actors", "1"],
                "ray, 2 replicas": ["--engine", "ray", "--actors", "2"],
                "ray cluster up, 1 replica": ["--engine", "ray", "--address", "auto", "--actors", "1"],
                "ray cluster up, 2 replicas": ["--engine", "ray", "--address", "auto", "--actors", "2"]}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        count = len(_copy_images(Path(args.model), args.task, args.n, Path(work) / "images"))
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        rows: dict[str, dict[str, dict[str, str]]] = {}
        for repeat in range(args.repeats):
            for name, engine in variants.items():  # in turn, so drift hits every variant alike
                if name == "ray cluster up, 1 replica":  # after the variants that start their own Ray
                    _ray("start", "--head", "--include-dashboard", "false", "--disable-usage-stats")
                out = Path(work) / f"{name.replace(' ', '').replace(',', '-')}-{repeat}"
                seconds[name].append(_detect(args.model, args.task, Path(work) / "images", out, engine))
                rows[name] = _rows(out)
                print(f"{name}: {count / seconds[name][-1]:.2f} images/s", flush=True)
            _ray("stop", "--force")
    rate = {name: count / statistics.median(s) for name, s in seconds.items()}
    per_image_overhead = statistics.median(seconds["ray, 1 replica"]) / count - statistics.median(seconds["local"]) / count
    archive_hours = 10_000_000 / (rate["ray, 2 replicas"] * 100) / 3600
    lines = [
        "# `medmoe detect` on one process and on Ray",
        "",
        (f"`python benchmarks/ray_speed.py --model {args.model} --task {args.task} --n {args.n} --repeats "
         f"{args.repeats}` on "
         f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}); load average before the run "
         f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. {count} real {args.task} test images in one command "
         "(overlays on), start-up, model loading and Ray's start included; median of the repeats, run in turn."),
        "",
        "| engine | images/s (median) | seconds per run |",
        "| --- | ---: | --- |",
        *(f"| {name} | {rate[name]:.2f} | {', '.join(f'{s:.1f}' for s in seconds[name])} |" for name in variants),
        "",
        (f"- 2 replicas over 1: {rate['ray, 2 replicas'] / rate['ray, 1 replica']:.2f}× with a Ray started by the "
         f"command, {rate['ray cluster up, 2 replicas'] / rate['ray cluster up, 1 replica']:.2f}× on a cluster "
         "already up (`ray start --head` before, `--address`)."),
        (f"- Ray's cost over the single process, per image, at 1 replica: {1000 * per_image_overhead:.0f} ms "
        "(its start, the pipeline's stages and the parts' writes, spread over the images)."),
        ("- Rows against the single process's (numbers within 1e-5 relative, text equal): "
         + "; ".join(f"{name}: {', '.join(diff) or 'equal'}"
                     for name in variants if name != "local"
                     for diff in [_differences(rows[name], rows["local"])]) + "."),
        (f"- On paper, 10 million images on 100 nodes like this one at the 2-replica rate: {archive_hours:.1f} h "
        "(the measured per-image cost times the count; reading from shared storage and the cluster's own "
        "overheads are not in it)."),
    ]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    raise SystemExit(main())
