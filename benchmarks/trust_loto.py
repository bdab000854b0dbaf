#!/usr/bin/env python
"""Is a task the model never saw flagged out of scope? Leave-one-task-out on more than its validation images.

``python benchmarks/trust_loto.py [RUN] [--out benchmarks/results/trust-loto.md]`` (default run
``benchmarks/results/cpu-feat/runs/feature_moe/seed0/all``). The validation estimate of
``trust_margin.py`` rests on the left-out task's validation normals alone (head CT: 9 images, all
flagged, while 80 % of its test images were). Once a task is left out, its **training** normals are
unseen data too, so this script hands the scope head fitted without the task (on the other tasks'
training normals and their reference copies; limit from their validation normals, as the product
fits it) the left-out task's training and validation normals, and copies of them with a synthetic
lesion (1–20 % of the image: abnormal scans of an untrained task), up to ``--cap`` of each. The
test split is not loaded.

Decision rules compared (each row one rule; in-scope columns: the other tasks' validation normals
with a synthetic lesion, and under an acquisition change, which should stay in scope):

- ``product``: nearest normalised distance above the pooled limit (:mod:`medmoe.trust.calibration`);
- ``per_task_limit``: each task its own 99 % limit of its leave-one-out normalised validation distances;
- ``lesion_copies_only``: the product rule with references that hold the lesion copies but not the
  acquisition copies (the head before issue 10's acquisition change);
- ``standardised``: the product rule with each task's correlation matrix shrunk rather than its
  covariance (``ScopeHead.fit(standardise=True)``), so features of small spread keep their weight.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402

RULES = ("product", "per_task_limit", "lesion_copies_only", "standardised")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", default=Path("benchmarks/results/cpu-feat/runs/feature_moe/seed0/all"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cap", type=int, default=300, help="most left-out images of each kind per task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rules", nargs="*", default=list(RULES), choices=RULES)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from medmoe.data.acquisition import acquisition_shift
    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.engine.calibrate import fit_scope, reference_copy_inputs, scope_distances, selected_copies
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.data import default_cache_dir, load_split, run_manifests
    from medmoe.engine.features import prepared_inputs
    from medmoe.report.tables import markdown_table
    from medmoe.trust.calibration import fit_calibration

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.run)
    model, config, ids = checkpoint.model, checkpoint.config, checkpoint.tasks.ids
    manifests, cache = run_manifests(args.run), default_cache_dir()
    train = load_split(manifests, checkpoint.tasks, "train", config, cache, False)
    val = load_split(manifests, checkpoint.tasks, "val", config, cache, False)

    def prepared(images: torch.Tensor, cached: bool = False) -> torch.Tensor:
        return prepared_inputs(model, images, cache_dir=cache if cached else None, progress=False)

    train_x, val_x = prepared(train.images, True), prepared(val.images, True)
    train_t, val_t = train.task_indices.numpy(), val.task_indices.numpy()
    copies = reference_copy_inputs(model, train.images, train.task_indices)  # lesion block, then acquisition block
    rng = np.random.default_rng(0)
    val_lesion = prepared(torch.from_numpy(synthesize_anomalies(val.images.numpy(), rng, area=(0.01, 0.2))[0]))
    val_shift = prepared(torch.from_numpy(acquisition_shift(val.images.numpy(), np.random.default_rng(0))))

    def left_out_images(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Task ``t``'s training and validation normals (at most ``cap``) and lesioned copies of them."""
        images = torch.cat([train.images[train_t == t], val.images[val_t == t]])
        pick = np.random.default_rng(t).permutation(len(images))[:args.cap]
        images = images[torch.from_numpy(np.sort(pick))]
        lesioned = synthesize_anomalies(images.numpy(), np.random.default_rng(100 + t), area=(0.01, 0.2))[0]
        return prepared(images), prepared(torch.from_numpy(lesioned))

    rows: dict[str, list[list[object]]] = {}
    for t, left in enumerate(ids):
        keep = [u for u in range(len(ids)) if u != t]
        remap = np.full(len(ids), -1)
        remap[keep] = np.arange(len(keep))
        sub = [ids[u] for u in keep]
        in_train, in_val = np.isin(train_t, keep), np.isin(val_t, keep)
        normals, lesioned = left_out_images(t)
        for rule in args.rules:
            block = copies[:len(train_x)] if rule == "lesion_copies_only" else copies
            head = fit_scope(model, config.model, train_x[torch.from_numpy(in_train)],
                             torch.from_numpy(remap[train_t[in_train]]), len(keep),
                             copy_inputs=selected_copies(block, in_train), standardise=rule == "standardised")
            cal_t = remap[val_t[in_val]]
            cal_d = scope_distances(model, config.model, head, val_x[torch.from_numpy(in_val)])
            calibration = fit_calibration(sub, np.zeros(len(cal_t)), cal_t, cal_d, "validation normals")
            if rule == "per_task_limit":  # each task's own limit: a calibration of that task alone
                limits = np.asarray([fit_calibration([sub[k]], np.zeros(np.sum(cal_t == k)), np.zeros(np.sum(cal_t == k), int),
                                                     cal_d[cal_t == k][:, [k]], "validation normals").scope_limit
                                     for k in range(len(keep))])
            else:
                limits = np.full(len(keep), calibration.scope_limit)

            def flagged(x: torch.Tensor) -> np.ndarray:
                n = calibration.normalised(sub, scope_distances(model, config.model, head, x))  # noqa: B023
                return np.all(n > limits, axis=1)  # noqa: B023

            keep_val = torch.from_numpy(in_val)
            rows.setdefault(rule, []).append({
                "task": left, "n": len(normals), "normals": 100 * flagged(normals).mean(),
                "lesioned": 100 * flagged(lesioned).mean(), "in_lesion": 100 * flagged(val_lesion[keep_val]).mean(),
                "in_shift": 100 * flagged(val_shift[keep_val]).mean()})
            print(rule, rows[rule][-1], flush=True)

    measures = ["normals", "lesioned", "in_lesion", "in_shift"]
    columns = [("task", "left-out task", ""), ("n", "its images (train + val normals)", ""),
               ("normals", "normals flagged %", ".1f"), ("lesioned", "lesioned copies flagged %", ".1f"),
               ("in_lesion", "other tasks' lesioned val normals flagged %", ".1f"),
               ("in_shift", "other tasks' acquisition-changed val normals flagged %", ".1f")]
    lines = ["# Leave-one-task-out scope on the left-out task's training and validation images\n",
             f"Run `{args.run}`; written by `python benchmarks/trust_loto.py`. One trained model (seed 0); lesion "
             f"and acquisition draws seeded (0; left-out lesions 100 + task index). Validation and training "
             f"splits only; up to {args.cap} left-out images per task.\n"]
    for rule, table in rows.items():
        mean = {"task": "mean", **{m: float(np.mean([r[m] for r in table])) for m in measures}}
        lines += [f"\n## {rule}\n", markdown_table([*table, mean], columns)]
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
