#!/usr/bin/env python
"""The hostile 250-image check of issue 28: does an out-of-scope or mismatch verdict ever hide a decision,
and do ``results.csv`` and the Python API ever disagree?

``python benchmarks/honest_answers.py --model RUN [--per-task 50] [--out benchmarks/results/honest-answers.md]``
takes ``--per-task`` test images of each of the run's tasks (seeded, from its manifests; normal and
abnormal as they come), scores them with ``medmoe detect`` given the task's own trained prompt (one
command per task, default options) and again with ``Detector.predict``, and reports per task: the
rows flagged out of scope or mismatched, how many of those still state a decision (all of them
should), how many of the flagged ones are anomalous at the stated false-positive rate, and every row
where the CSV and the API differ in decision, score (relative 1e-5), p-value or flags (none should).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402

STATED = ("anomalous", "normal")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--per-task", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import numpy as np

    from medmoe import Detector
    from medmoe.engine.data import run_manifests

    detector = Detector.load(args.model)
    manifests = run_manifests(args.model)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="medmoe-honest-"))
    rows, disagreements = [], []
    try:
        for task in detector.tasks:
            entries = [(m, s) for m in manifests for s in m.select(split="test", task=task.id)]
            folder = work / "images" / task.id
            folder.mkdir(parents=True)
            labels = {}
            for i in rng.permutation(len(entries))[:args.per_task]:
                manifest, sample = entries[i]
                source = manifest.resolve(sample.path)
                target = folder / f"{i}{''.join(source.suffixes)}"
                shutil.copy(source, target)
                labels[str(target.resolve())] = sample.label
            out = work / "out" / task.id
            done = subprocess.run([sys.executable, "-c", "from medmoe.cli import main; main()", "detect", str(folder),
                                   "--model", str(args.model), "--prompt", task.prompt, "--out", str(out),
                                   "--no-progress", "--no-overlays"], capture_output=True, text=True, check=False)
            if done.returncode not in (0, 1):
                raise RuntimeError(done.stderr[-2000:])
            with open(out / "results.csv", newline="", encoding="utf-8") as handle:
                table = list(csv.DictReader(handle))
            api = {r.source: r for r in detector.predict_batch(sorted(folder.iterdir()), prompt=task.prompt)}
            for row in table:
                ours = api[row["source"]]  # both absolute: the work folder is
                same = (row["decision"] == ours.decision
                        and math.isclose(float(row["score"]), ours.score, rel_tol=1e-5)
                        and math.isclose(float(row["p_value"]), ours.p_value, rel_tol=1e-3)
                        and row["out_of_scope"] == str(ours.out_of_scope).lower()
                        and row["prompt_mismatch"] == str(ours.prompt_mismatch).lower())
                if not same:
                    disagreements.append(f"{row['source']}: CSV {row['decision']}/{row['score']} vs API "
                                         f"{ours.decision}/{ours.score:.6g}")
            flagged = [r for r in table if r["out_of_scope"] == "true" or r["prompt_mismatch"] == "true"]
            outside = [r for r in table if r["out_of_scope"] == "true"]
            rows.append({
                "task": task.id, "n": len(table),
                "abnormal": sum(labels.get(str(Path(r["source"]).resolve()), 0) == 1 for r in table),
                "out_of_scope": len(outside),
                "out_of_scope_abnormal": sum(labels.get(str(Path(r["source"]).resolve()), 0) == 1 for r in outside),
                "mismatch": sum(r["prompt_mismatch"] == "true" for r in table),
                "flagged_stated": sum(r["decision"] in STATED for r in flagged), "flagged": len(flagged),
                "flagged_anomalous": sum(r["decision"] == "anomalous" for r in flagged),
                "anomalous": sum(r["decision"] == "anomalous" for r in table),
            })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = ("| task | images (abnormal) | anomalous | out of scope (abnormal) | mismatch | flagged rows with a stated "
              "decision | flagged and anomalous |\n|---|---:|---:|---:|---:|---:|---:|\n")
    body = "\n".join(f"| {r['task']} | {r['n']} ({r['abnormal']}) | {r['anomalous']} | {r['out_of_scope']} "
                     f"({r['out_of_scope_abnormal']}) | {r['mismatch']} | {r['flagged_stated']} of {r['flagged']} | "
                     f"{r['flagged_anomalous']} |" for r in rows)
    total = sum(r["n"] for r in rows)
    text = (f"# Honest answers: the 250-image check\n\n`python benchmarks/honest_answers.py --model {args.model} "
            f"--per-task {args.per_task}` on {platform.node()} ({os.cpu_count()} CPUs). {total} test images, each "
            "scored by `medmoe detect` with its task's own prompt and by `Detector.predict`.\n\n" + header + body
            + f"\n\nRows where results.csv and the API disagree: **{len(disagreements)}**"
            + ("".join(f"\n- {d}" for d in disagreements[:20])) + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
