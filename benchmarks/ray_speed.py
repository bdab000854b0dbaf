#!/usr/bin/env python
"""Images/s of ``medmoe detect`` on one process and on a Ray cluster of 1 and 2 one-core workers, side by side.

``python benchmarks/ray_speed.py --model RUN [--task brain_mri] [--n 300] [--repeats 2]
[--out benchmarks/results/ray-speed.md]`` copies ``n`` real test images of one task (seeded, from RUN's
manifests), then times, in turn and ``--repeats`` times each, one ``medmoe detect`` command over all of them
(start-up and model loading included, overlays on), as an archive is screened:

- ``--engine local`` on both cores and on one (``taskset``): the single-process path, its default workers;
- ``--engine ray --address`` a cluster of **workers**: Ray nodes of one CPU each, each pinned to its own core
  (``taskset -c i ray start``), so that 1 and 2 workers are 1 and 2 machines' worth of cores; one model
  replica per worker (``--actors``), the command itself on the workers' cores.

The cluster is started before the command (as an archive's cluster is) and stopped after it. While the command
runs, the overlays written so far are counted every 0.2 s, which gives three numbers per run: the whole
command's images/s, the seconds to its first overlay (start-up: processes, imports, model loads), and its rate
**once running** (from a quarter of the images to the last; what an archive of millions sees). Reported: the
median of each, the ratios of 2 workers over 1, the per-image time Ray adds over the single process on one
core once both run, the rows' equality (scores within 1e-5 relative, every other column equal), and what a
10-million-image archive would cost on 100 nodes like this machine (on paper: the running rate times the
count, plus one start-up).
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}
"""Several Ray nodes on one machine, all with token authentication (as the test suite's two-node cluster); set for
this process and the commands it starts."""


@dataclass(frozen=True)
class Variant:
    """One way to run the command: the engine's options, the cores it may use and the Ray workers started."""

    options: tuple[str, ...]
    cores: str
    workers: int = 0


@dataclass(frozen=True)
class Timing:
    """One run: the whole command's seconds, the seconds to its first overlay, and its rate once running."""

    seconds: float
    first: float
    running_rate: float


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


def _detect(model: str, task: str, images: Path, out: Path, variant: Variant, count: int) -> Timing:
    """Run one ``medmoe detect`` over the folder ``images`` on ``variant.cores``, counting its overlays."""
    medmoe = str(Path(sys.executable).with_name("medmoe"))
    command = ["taskset", "-c", variant.cores, medmoe, "detect", str(images), "--task", task, "--model", model,
               "--out", str(out), "--no-progress", *variant.options]
    started = time.perf_counter()
    seen: list[tuple[float, int]] = []  # (seconds, overlays written)
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        while process.poll() is None:
            time.sleep(0.2)
            written = sum(1 for f in os.scandir(out) if f.name.endswith("_overlay.png")) if out.exists() else 0
            seen.append((time.perf_counter() - started, written))
        errors = process.stderr.read() if process.stderr else ""
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{errors[-2000:]}")
    first = next(t for t, n in seen + [(seconds, count)] if n > 0)
    quarter = next(t for t, n in seen + [(seconds, count)] if n >= count // 4)
    last = next(t for t, n in seen + [(seconds, count)] if n >= count)
    return Timing(seconds, first, (count - count // 4) / max(last - quarter, 1e-9))


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


def _ray(*args: str, cores: str | None = None) -> None:
    """Run the ``ray`` command (on ``cores`` only, when given: the processes a node starts inherit it)."""
    pinned = ["taskset", "-c", cores] if cores else []
    subprocess.run([*pinned, str(Path(sys.executable).with_name("ray")), *args], check=True, capture_output=True)


def _start_workers(n: int, port: int) -> str:
    """A cluster of ``n`` one-CPU Ray nodes, node ``i`` pinned to core ``i``; its address once all have joined."""
    import ray

    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    _ray("start", "--head", "--port", str(port), "--include-dashboard", "false", *common, cores="0")
    for core in range(1, n):
        _ray("start", "--address", address, *common, cores=str(core))
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        while ray.cluster_resources().get("CPU", 0) < n:
            time.sleep(0.2)
    finally:
        ray.shutdown()
    return address


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder with manifests (the images come from them)")
    parser.add_argument("--task", default="brain_mri", help="the task whose test images are screened")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--port", type=int, default=6391, help="the benchmark cluster's head port")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.update(RAY_ENV)  # before Ray is imported here
    _ray("get-auth-token", "--generate")  # the cluster's token (~/.ray/auth_token), if there is none yet

    variants = {"local, 2 cores": Variant(("--engine", "local"), "0,1"),
                "local, 1 core": Variant(("--engine", "local"), "0"),
                "ray, 1 worker (1 core)": Variant(("--engine", "ray", "--actors", "1"), "0", workers=1),
                "ray, 2 workers (2 cores)": Variant(("--engine", "ray", "--actors", "2"), "0,1", workers=2)}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        count = len(_copy_images(Path(args.model), args.task, args.n, Path(work) / "images"))
        timings: dict[str, list[Timing]] = {name: [] for name in variants}
        rows: dict[str, dict[str, dict[str, str]]] = {}
        for repeat in range(args.repeats):
            for name, variant in variants.items():  # in turn, so drift hits every variant alike
                options = variant.options
                if variant.workers:
                    options += ("--address", _start_workers(variant.workers, args.port))
                out = Path(work) / f"{name.split(' (')[0].replace(' ', '').replace(',', '-')}-{repeat}"
                try:
                    timings[name].append(_detect(args.model, args.task, Path(work) / "images", out,
                                                 Variant(options, variant.cores), count))
                finally:
                    if variant.workers:
                        _ray("stop", "--force")
                rows[name] = _rows(out)
                t = timings[name][-1]
                print(f"{name}: {count / t.seconds:.2f} images/s, first after {t.first:.1f} s, "
                      f"{t.running_rate:.2f} images/s once running", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(getattr(t, key) for t in timings[name])

    one, two = "ray, 1 worker (1 core)", "ray, 2 workers (2 cores)"
    overall = {name: count / median(name, "seconds") for name in variants}
    running = {name: median(name, "running_rate") for name in variants}
    per_image_overhead = 1 / running[one] - 1 / running["local, 1 core"]
    archive_hours = (10_000_000 / (running[two] * 100) + median(two, "first")) / 3600
    lines = [
        "# `medmoe detect` on one process and on Ray workers",
        "",
        (f"`python benchmarks/ray_speed.py --model {args.model} --task {args.task} --n {args.n} --repeats "
         f"{args.repeats}` on {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}); load average "
         f"before the run {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. {count} real {args.task} test images in "
         "one command (overlays on), start-up and model loading included. A Ray worker is a one-CPU node pinned "
         "to its own core; the cluster is up before the command. Median of the repeats, run in turn."),
        "",
        "| engine | cores | images/s, whole command | first overlay after (s) | images/s once running | seconds per run |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        *(f"| {name} | {variant.cores} | {overall[name]:.2f} | {median(name, 'first'):.1f} | {running[name]:.2f} | "
          f"{', '.join(f'{t.seconds:.1f}' for t in timings[name])} |" for name, variant in variants.items()),
        "",
        (f"- 2 workers over 1: **{running[two] / running[one]:.2f}× once running**, "
         f"{overall[two] / overall[one]:.2f}× over the whole command (start-up included)."),
        (f"- Ray's cost over the single process on one core, per image once both run: {1000 * per_image_overhead:.0f} ms "
         "(the pipeline's stages, moving batches between processes, the parts' writes); its start-up is the "
         "'first overlay' column."),
        ("- Rows against the single process's (numbers within 1e-5 relative, text equal): "
         + "; ".join(f"{name}: {', '.join(diff) or 'equal'}"
                     for name in variants if name != "local, 2 cores"
                     for diff in [_differences(rows[name], rows["local, 2 cores"])]) + "."),
        (f"- On paper, 10 million images on 100 nodes like this machine (2 workers each) at the running rate, plus "
         f"one start-up: {archive_hours:.1f} h (reading from shared storage and a large cluster's own overheads are "
         "not in it)."),
    ]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    raise SystemExit(main())
