#!/usr/bin/env python
"""Remake the shipped model from the data and compare it with the installed one.

``python benchmarks/reproduce_shipped_model.py --data $MEDMOE_DATA [--run runs/repro]
[--out benchmarks/results/shipped-model-reproduction.md]`` runs the commands of ``make shipped-model``
(train with one torch thread, evaluate) into a scratch run folder — the installed package is not touched —
and reports the wall time of each, whether the weights are bit-identical to the shipped ones (SHA-256), and
the largest difference of any test metric of the card (AUROC, AP, F1, accuracy) per task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402

METRICS = ("auroc", "ap", "f1_val", "acc_val")


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - started


def _tensor_differences(a: Path, b: Path) -> dict[str, float]:
    """The tensors of two weight files that differ, with the largest absolute difference of each."""
    import numpy as np
    from safetensors.numpy import load_file

    first, second = load_file(a), load_file(b)
    return {key: float(np.abs(first[key].astype(np.float64) - second[key].astype(np.float64)).max())
            if first[key].shape == second[key].shape else math.inf
            for key in sorted(first) if not np.array_equal(first[key], second[key])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MEDMOE_DATA"), help="data root (default: $MEDMOE_DATA)")
    parser.add_argument("--run", type=Path, default=Path("runs/shipped-reproduction"), help="scratch run folder")
    parser.add_argument("--out", type=Path, default=None, help="Markdown report to write")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data or MEDMOE_DATA is required")

    from medmoe.api.shipped import DEFAULT_MODEL, installed_models

    shipped = installed_models()[DEFAULT_MODEL]
    medmoe = str(Path(sys.executable).with_name("medmoe"))
    shutil.rmtree(args.run, ignore_errors=True)
    train_s = _timed([medmoe, "train", "--config", "cpu-feat", "--data", args.data, "--seed", "0", "--out",
                      str(args.run), "--no-progress"])
    eval_s = _timed([medmoe, "evaluate", str(args.run), "--out", str(args.run / "eval" / "metrics.json"),
                     "--no-progress"])

    ours = json.loads((args.run / "model.json").read_text())
    theirs = json.loads((shipped.path / "model.json").read_text())
    metrics = json.loads((args.run / "eval" / "metrics.json").read_text())["tasks"]
    shipped_metrics = json.loads((shipped.path / "metrics.json").read_text())["tasks"]
    same = ours["weights"]["sha256"] == theirs["weights"]["sha256"]
    differing = _tensor_differences(args.run / "model.safetensors", shipped.path / "model.safetensors")
    lines = [
        f"# Reproducing the shipped model {shipped.distribution}",
        "",
        (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; one torch "
         "thread (`OMP_NUM_THREADS=1`), as `make shipped-model` runs. Command: `python "
         f"benchmarks/reproduce_shipped_model.py --data {args.data}`."),
        "",
        f"- Wall time: train {train_s / 60:.1f} min, evaluate {eval_s / 60:.1f} min.",
        (f"- Weights file: {'bit-identical' if same else 'not bit-identical'} (SHA-256 "
         f"`{ours['weights']['sha256'][:16]}…` against the shipped `{theirs['weights']['sha256'][:16]}…`); "
         + ("tensors that differ, with the largest absolute difference: "
            + ", ".join(f"`{k}` {v:.2g}" for k, v in differing.items()) if differing else "every tensor equal")
         + "."),
        "",
        "| Task | " + " | ".join(f"{m} shipped | {m} remade" for m in METRICS) + " | largest difference |",
        "| --- | " + " | ".join("---: | ---:" for _ in METRICS) + " | ---: |",
    ]
    for task, shipped_task in shipped_metrics.items():
        pairs = [(100 * shipped_task[m], 100 * metrics[task][m]) for m in METRICS]
        lines.append(f"| {task} | " + " | ".join(f"{a:.2f} | {b:.2f}" for a, b in pairs)
                     + f" | {max(abs(a - b) for a, b in pairs):.3f} |")
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    raise SystemExit(main())
