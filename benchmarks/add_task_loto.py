#!/usr/bin/env python
"""Leave-one-task-out: add the fifth task to a model trained on the other four, from k of its normals.

``python benchmarks/add_task_loto.py [--runs benchmarks/results/cpu-feat/runs] [--k 8 32 0]
[--experts expert route] [--out benchmarks/results/cpu-feat/add_task.md]``

Needs, under ``--runs``: ``feature_moe/seed0/all`` (the cpu-feat model trained on all five tasks;
its manifests give the splits) and ``loto/<task>/base`` (cpu-feat trained on the other four, made
by ``medmoe train --config cpu-feat --data <the four tasks' manifests of that run>``). For each
left-out task and ``k`` (``0``: all its training and validation normals), ``k`` training normals are
drawn (seed 0), the task is added with each ``--experts`` variant (``medmoe add-task``: a 20 %
validation carve from ``k ≥ 10``, else calibrated on the training normals), and the table reports:
the added task's test AUROC (primary view) against (a) the five-task model and (b) per-task
PatchCore fitted on the same ``k`` normals, with its 1 % coreset and, for ``k`` normals, with every
patch kept (the added task's own memory keeps at least 4096 patches, so this is the fair peer); the other four tasks' test AUROC before and after the
add and the largest score change on their test images (0: bit-identical); and each add's wall time.
One run (seed 0) per cell.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks/results/cpu-feat/runs")
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32, 0])
    parser.add_argument("--experts", nargs="+", default=["expert", "route"])
    parser.add_argument("--tasks", nargs="+", default=None, help="left-out tasks (default: every one with a base)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cpu-feat/add_task.md")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import medmoe.model.feature.memory as memory_module
    from medmoe.atomic import atomic_write_text
    from medmoe.data.dataset import ImageDataset
    from medmoe.data.manifest import Manifest
    from medmoe.data.splits import seeded_rng
    from medmoe.engine.add_task import add_task
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.config import load_config
    from medmoe.engine.data import default_cache_dir, run_manifests
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.inference import predict, task_text_embeddings
    from medmoe.engine.train import train
    from medmoe.metrics import image_metrics
    from medmoe.report.tables import markdown_table
    from medmoe.tasks import default_registry

    torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    full_run = args.runs / "feature_moe/seed0/all"
    manifests = run_manifests(full_run)
    registry = default_registry()

    def test_scores(run: Path, task_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per task: (scores, labels) of its primary-view test images under the run's model (kept in
        ``RUN/test_scores.npz`` for the next call)."""
        stored = run / "test_scores.npz"
        if stored.is_file():
            with np.load(stored) as cached:
                if all(f"{t}_scores" in cached for t in task_ids):
                    return {t: (cached[f"{t}_scores"], cached[f"{t}_labels"]) for t in task_ids}
        checkpoint = load_checkpoint(run)
        result = {}
        for task in task_ids:
            entries = [(m, s) for m in manifests for s in m.select(split="test", task=task)
                       if "other_source" not in s.flags]
            batch = ImageDataset(entries, checkpoint.tasks, resolution=checkpoint.config.model.resolution,
                                 cache_dir=cache, with_masks=False).materialize(progress=False)
            x = prepared_inputs(checkpoint.model, batch.images, cache_dir=cache, progress=False)
            text = task_text_embeddings(checkpoint.prompt_embeddings, batch.task_indices)
            result[task] = (predict(checkpoint.model, x, text, prepared=True).score, batch.labels.numpy())
        arrays = dict(np.load(stored)) if stored.is_file() else {}
        arrays.update({f"{t}_scores": v[0] for t, v in result.items()})
        arrays.update({f"{t}_labels": v[1] for t, v in result.items()})
        np.savez(stored, **arrays)
        return result

    def auroc(pair: tuple[np.ndarray, np.ndarray]) -> float:
        return 100 * image_metrics(pair[0], pair[1], threshold_val=None).auroc

    left_out = args.tasks or [t for t in registry.ids if (args.runs / f"loto/{t}/base/model.json").is_file()]
    rows, records = [], []
    for task_id in left_out:
        base = args.runs / f"loto/{task_id}/base"
        others = load_checkpoint(base).tasks.ids
        full = auroc(test_scores(full_run, [task_id])[task_id])
        before = test_scores(base, others)
        task_rows = [s for m in manifests for s in m.samples if s.task == task_id]
        root = next(m.root for m in manifests if task_id in m.tasks)
        train_rows = [s for s in task_rows if s.split == "train"]
        for k in args.k:
            if k:
                pick = seeded_rng(0, "add-task", task_id, str(k)).permutation(len(train_rows))[:k]
                chosen = [train_rows[i] for i in sorted(pick)]
            else:
                chosen = [s for s in task_rows if s.split in ("train", "val")]
            manifest = Manifest(root=root, samples=chosen + [s for s in task_rows if s.split == "test"])
            label = str(k) if k else f"all ({len(chosen)})"
            cells = {"task": task_id, "k": label, "full": f"{full:.1f}"}
            for expert in args.experts:
                out = args.runs / f"loto/{task_id}/add-{expert}-k{k or 'all'}"
                if not (out / "model.json").is_file():
                    started = time.perf_counter()
                    add_task(base, registry[task_id], [manifest], out, expert=expert, progress=False)
                    seconds = time.perf_counter() - started
                    (out / "add_seconds.txt").write_text(f"{seconds:.2f}\n")
                seconds = float((out / "add_seconds.txt").read_text())
                added = auroc(test_scores(out, [task_id])[task_id])
                after = test_scores(out, others)
                change = max(float(np.abs(after[t][0] - before[t][0]).max()) for t in others)
                cells[expert] = f"{added:.1f}"
                cells[f"{expert}_s"] = f"{seconds:.0f}"
                cells[f"{expert}_change"] = f"{change:.1g}"
                records.append({"task": task_id, "k": k, "expert": expert, "auroc": added, "seconds": seconds,
                                "other_max_score_change": change,
                                "others_before": {t: auroc(before[t]) for t in others},
                                "others_after": {t: auroc(after[t]) for t in others}})
            config = load_config("cpu-feat", ["model.architecture=patchcore", "model.hallucination=false",
                                              "model.prompt=true", "train.num_threads=1"])
            for variant, coverage in (("patchcore", memory_module.COVERAGE), ("patchcore_all", 1.0)):
                if variant == "patchcore_all" and not k:
                    cells[variant] = "—"
                    continue
                pc_out = args.runs / f"loto/{task_id}/{variant.replace('_', '-')}-k{k or 'all'}"
                if not (pc_out / "model.json").is_file():
                    default, memory_module.COVERAGE = memory_module.COVERAGE, coverage
                    try:
                        train(config, [manifest], pc_out, progress=False)
                    finally:
                        memory_module.COVERAGE = default
                cells[variant] = f"{auroc(test_scores(pc_out, [task_id])[task_id]):.1f}"
            cells["others"] = ", ".join(f"{t} {auroc(before[t]):.1f}" for t in others)
            rows.append(cells)
            print(cells, flush=True)

    columns = [("task", "added task", ""), ("k", "k normals", "")]
    for expert in args.experts:
        columns += [(expert, f"AUROC, {expert}", ""), (f"{expert}_s", f"add time s, {expert}", ""),
                    (f"{expert}_change", f"max score change, other tasks ({expert})", "")]
    columns += [("full", "AUROC, five-task model", ""), ("patchcore", "AUROC, PatchCore (same k, 1 % coreset)", ""),
                ("patchcore_all", "AUROC, PatchCore (same k, every patch)", ""),
                ("others", "other tasks' AUROC (before = after)", "")]
    text = (f"# Adding a task from k normals (leave one task out)\n\nWritten by `python benchmarks/add_task_loto.py` "
            f"on {platform.node()} ({platform.processor() or platform.machine()}, {args.threads} torch thread(s)); "
            "one run (seed 0) per cell; test split, primary view. Base: cpu-feat `feature_moe` trained on the "
            "other four tasks (same splits as the five-task model). 'max score change' is over every test image "
            "of the other four tasks (0: bit-identical).\n\n" + markdown_table(rows, columns) + "\n")
    print(text)
    atomic_write_text(args.out, text)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
