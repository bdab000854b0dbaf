#!/usr/bin/env python
"""The pixel AE with MedIAnomaly's schedule on Brain Tumor, against its published 85.9 ± 0.3 AUROC.

``python benchmarks/pixel_ae_repro.py --data DATA [--seeds 0 1 2] [--runs DIR] [--out FILE]`` trains,
per seed, medmoe's single-task pixel AE (the paper's encoder and one plain decoder, MSE; the
``ae`` row of Table 1) on brain_mri alone with MedIAnomaly's AE settings — 64 × 64, Adam lr 1e-3,
batch 64, 600 epochs, FC width 1024, latent 16 — by the ``medmoe train`` command it prints, then
``medmoe evaluate``s it on the test split (primary view) and writes a table: AUROC and AP per seed,
also without the test normals that are byte-identical to a training image (``dup_of_train``). A run
folder that already holds a model is evaluated, not retrained. The checkpoint is the epoch of lowest
validation loss (the profile's rule; validation normals only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402

PUBLISHED = "85.9 ± 0.3"
"""MedIAnomaly's AE on Brain Tumor (AUROC, %, mean ± std over its runs)."""

SCHEDULE = ("model.architecture=ae", "model.hallucination=false", "model.prompt=false", "train.tasks=[brain_mri]",
            "model.fc_width=1024", "model.latent_dim=16", "train.lr=1e-3", "train.batch_size=64",
            "train.epochs=600")


def train_command(data: str, seed: int, run: Path) -> list[str]:
    """The ``medmoe train`` command of one seed."""
    sets = [arg for field in SCHEDULE for arg in ("--set", field)]
    return ["medmoe", "train", "--config", "cpu-64", *sets, "--seed", str(seed), "--data", data, "--out", str(run),
            "--no-progress"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("MEDMOE_DATA"), help="data root (default: $MEDMOE_DATA)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/pixel-ae/runs"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("give --data or set MEDMOE_DATA")

    import numpy as np

    from medmoe.report.tables import markdown_table

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows, aurocs, dedup = [], [], []
    for seed in args.seeds:
        run = args.runs / f"seed{seed}"
        if not (run / "model.json").exists():
            print("+", shlex.join(train_command(args.data, seed, run)), flush=True)
            subprocess.run(train_command(args.data, seed, run), check=True, env=env)
        metrics_path = run / "eval" / "metrics.json"
        subprocess.run(["medmoe", "evaluate", str(run), "--out", str(metrics_path), "--no-progress"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        metrics = json.loads(metrics_path.read_text())
        task, info = metrics["tasks"]["brain_mri"], metrics["checkpoint_info"]
        aurocs.append(100 * task["auroc"])
        dedup.append(100 * task["dedup"]["auroc"])
        rows.append({"seed": seed, "auroc": f"{aurocs[-1]:.2f}", "ap": f"{100 * task['ap']:.2f}",
                     "dedup": f"{dedup[-1]:.2f} ({task['dedup']['n_normal']} normals)",
                     "epoch": f"{info['best_epoch']} of {info['epochs']}", "seconds": f"{info['train_seconds']:.0f}"})
    rows.append({"seed": "mean ± std", "auroc": f"{np.mean(aurocs):.2f} ± {np.std(aurocs):.2f}", "ap": "",
                 "dedup": f"{np.mean(dedup):.2f} ± {np.std(dedup):.2f}", "epoch": "", "seconds": ""})
    table = markdown_table(rows, [("seed", "seed", ""), ("auroc", "AUROC (%)", ""), ("ap", "AP (%)", ""),
                                  ("dedup", "AUROC without dup_of_train test normals (%)", ""),
                                  ("epoch", "checkpoint (lowest val loss)", ""),
                                  ("seconds", "training s (1 thread)", "")])
    command = shlex.join(train_command("DATA", args.seeds[0], args.runs / f"seed{args.seeds[0]}"))
    text = (f"# The pixel AE with MedIAnomaly's schedule on Brain Tumor (brain_mri)\n\n"
            f"Published (MedIAnomaly, AE, Brain Tumor): **{PUBLISHED}** AUROC. Here: test split of the paper's "
            f"brain split (`brain_tumor/splits/data.json`), primary view; seeds {args.seeds}, one run each, "
            f"on {platform.processor() or platform.machine()} ({os.cpu_count()} cores). Per seed:\n\n"
            f"`{command}` then `medmoe evaluate RUN --out RUN/eval/metrics.json`.\n\n"
            f"Written by `python benchmarks/pixel_ae_repro.py --data DATA --seeds "
            f"{' '.join(map(str, args.seeds))}`.\n\n{table}\n\n"
            "Against MedIAnomaly's AE: the same encoder widths (16-32-64-64), FC width, latent size and schedule; "
            "different are the pixel range ([0, 1]; theirs [-1, 1]), a BN+ReLU after the decoder's second FC "
            "layer, the checkpoint (lowest validation loss; theirs the last epoch) and the image copies "
            "(224×224, resized to 64×64 here).\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
