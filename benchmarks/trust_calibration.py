#!/usr/bin/env python
"""Can a clinician trust the answers? Calibration, mismatch and out-of-scope on the real test data.

``python benchmarks/trust_calibration.py RUN [--out benchmarks/results/cpu-feat/trust.md]`` first
calibrates the run as ``medmoe calibrate RUN`` does (scope head on the training normals, p-values and
scope limit on the validation normals; rewrites its ``model.json``/``model.safetensors``, weights
unchanged), then scores each task's test images (primary view) and reports:

1. **Calibration**: for ``α`` ∈ {0.01, 0.05, 0.10}, the false-positive rate on each task's test
   normals (images with ``p ≤ α``; Clopper–Pearson 95 % interval) against ``α``, the smallest
   reachable p, and the sensitivity on the test abnormals.
2. **Mismatch**: every test image scored with each wrong task's prompt: share flagged (mismatch or
   out of scope); with its own prompt: share flagged as mismatch.
3. **Out of scope**: scikit-image's natural images, and, leave-one-task-out, each task's test
   images against a scope head and calibration fitted without that task: share flagged; and the
   share of in-scope test images flagged by the full model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from scipy.stats import binomtest
    from trust_design import natural_images

    from medmoe.data.dataset import ImageDataset
    from medmoe.data.transforms import preprocess_image
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.data import default_cache_dir, load_split, run_manifests
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.inference import predict, task_text_embeddings
    from medmoe.engine.trust_fitting import (
        calibrate_run,
        fit_scope,
        reference_copy_inputs,
        scope_distances,
        selected_copies,
    )
    from medmoe.report.tables import markdown_table
    from medmoe.trust.calibration import fit_calibration
    from medmoe.trust.conformal import decision_threshold, p_values

    torch.set_num_threads(args.threads)
    calibration = calibrate_run(args.run, progress=False)
    checkpoint = load_checkpoint(args.run)
    model, config, tasks = checkpoint.model, checkpoint.config, checkpoint.tasks
    ids = tasks.ids
    manifests = run_manifests(args.run)
    cache = default_cache_dir()
    entries = [(m, s) for m in manifests for s in m.select(split="test") if "other_source" not in s.flags]
    test = ImageDataset(entries, tasks, resolution=config.model.resolution, cache_dir=cache,
                        with_masks=False).materialize(progress=False)
    x = prepared_inputs(model, test.images, cache_dir=cache, progress=False)
    t_idx, labels = test.task_indices.numpy(), test.labels.numpy()
    scores = predict(model, x, task_text_embeddings(checkpoint.prompt_embeddings, test.task_indices),
                     prepared=True).score
    distances = scope_distances(model, config.model, checkpoint.scope, x)
    normalised = calibration.normalised(ids, distances)

    # 1. calibration
    cal_rows = []
    for alpha in (0.01, 0.05, 0.10):
        for t, task in enumerate(ids):
            ref = np.asarray(calibration.scores[task])
            threshold, level = decision_threshold(ref, alpha)
            p = p_values(ref, scores[t_idx == t])
            normal, abnormal = labels[t_idx == t] == 0, labels[t_idx == t] == 1
            k, n = int((p[normal] <= level).sum()), int(normal.sum())
            ci = binomtest(k, n).proportion_ci(0.95, method="exact")
            cal_rows.append({"alpha": f"{alpha:g}", "task": task, "n_cal": str(len(ref)),
                             "p_min": f"{1 / (len(ref) + 1):.3f}", "level": f"{level:.3f}",
                             "fpr": f"{100 * k / n:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}] ({k}/{n})",
                             "sens": f"{100 * (p[abnormal] <= level).mean():.1f} ({int(abnormal.sum())})"})

    # 2. mismatch (the image's own resemblance, whatever the prompt)
    nearest = np.argmin(normalised, axis=1)
    out = normalised[np.arange(len(nearest)), nearest] > calibration.scope_limit
    mis_rows = []
    for t, task in enumerate(ids):
        mine = t_idx == t
        wrong = [np.mean(out[mine] | (nearest[mine] != w)) for w in range(len(ids)) if w != t]
        mis_rows.append({"task": task, "n": str(int(mine.sum())),
                         "wrong": f"{100 * np.mean(wrong):.2f} (worst {100 * np.min(wrong):.2f})",
                         "right": f"{100 * np.mean(~out[mine] & (nearest[mine] != t)):.2f}",
                         "oos": f"{100 * np.mean(out[mine]):.2f}",
                         "oos_normal": f"{100 * np.mean(out[mine & (labels == 0)]):.2f}"})

    # 3. out of scope: natural images, and leave-one-task-out
    names, images = zip(*natural_images(), strict=True)
    nat = torch.from_numpy(np.stack([preprocess_image(im, config.model.in_channels, config.model.resolution)
                                     for im in images]))
    nat_norm = calibration.normalised(ids, scope_distances(model, config.model, checkpoint.scope,
                                                           prepared_inputs(model, nat, cache_dir=None, progress=False)))
    nat_flag = nat_norm.min(axis=1) > calibration.scope_limit
    missed = [n for n, f in zip(names, nat_flag, strict=True) if not f]
    splits = {}
    for split in ("train", "val"):
        batch = load_split(manifests, tasks, split, config, cache, progress=False)
        splits[split] = (prepared_inputs(model, batch.images, cache_dir=cache, progress=False),
                         batch.task_indices.numpy())
        if split == "train":  # the scope head's reference copies, as training fits them
            train_copies = reference_copy_inputs(model, batch.images, batch.task_indices)
    oos_rows = []
    for t, task in enumerate(ids):
        keep = [u for u in range(len(ids)) if u != t]
        remap = {u: i for i, u in enumerate(keep)}
        (tr_x, tr_t), (va_x, va_t) = splits["train"], splits["val"]
        tr_m, va_m = np.isin(tr_t, keep), np.isin(va_t, keep)
        head = fit_scope(model, config.model, tr_x[torch.from_numpy(tr_m)],
                         torch.tensor([remap[u] for u in tr_t[tr_m]]), len(keep),
                         copy_inputs=selected_copies(train_copies, tr_m))
        va_i = np.array([remap[u] for u in va_t[va_m]])
        sub_ids = [ids[u] for u in keep]
        cal = fit_calibration(sub_ids, np.zeros(len(va_i)), va_i,
                              scope_distances(model, config.model, head, va_x[torch.from_numpy(va_m)]), "val")
        left = cal.normalised(sub_ids, scope_distances(model, config.model, head, x[torch.from_numpy(t_idx == t)]))
        inside = cal.normalised(sub_ids, scope_distances(model, config.model, head, x[torch.from_numpy(t_idx != t)]))
        nat_sub = cal.normalised(sub_ids, scope_distances(model, config.model, head,
                                                         prepared_inputs(model, nat, cache_dir=None, progress=False)))
        oos_rows.append({"task": task, "n": str(int((t_idx == t).sum())),
                         "flagged": f"{100 * np.mean(left.min(1) > cal.scope_limit):.1f}",
                         "inside": f"{100 * np.mean(inside.min(1) > cal.scope_limit):.2f}",
                         "natural": f"{100 * np.mean(nat_sub.min(1) > cal.scope_limit):.1f}"})

    text = (f"# Trust outputs on the real test data: `{args.run}`\n\n"
            f"Written by `python benchmarks/trust_calibration.py {args.run}` (calibrated first, as "
            f"`medmoe calibrate` does; calibration source: {calibration.source}; scope limit "
            f"{calibration.scope_limit:.2f} × a task's median validation distance). One trained model "
            f"(seed {checkpoint.info.get('seed', '?')}), one run. Test split, primary view.\n\n"
            "## 1. False-positive rate on test normals at α (p-value ≤ α), Clopper–Pearson 95 % interval\n\n"
            + markdown_table(cal_rows, [("alpha", "α", ""), ("task", "Task", ""), ("n_cal", "cal. normals", ""),
                                        ("p_min", "smallest p", ""), ("level", "level used", ""),
                                        ("fpr", "FPR on test normals % [95 % CI] (k/n)", ""),
                                        ("sens", "sensitivity % (n abnormal)", "")])
            + "\n\n## 2. Prompt–image mismatch\n\n"
            + markdown_table(mis_rows, [("task", "Task", ""), ("n", "test images", ""),
                                        ("wrong", "flagged with a wrong task's prompt % (mean over 4)", ""),
                                        ("right", "mismatch flagged with the right prompt %", ""),
                                        ("oos", "out of scope, all test images %", ""),
                                        ("oos_normal", "out of scope, test normals %", "")])
            + f"\n\n## 3. Out of scope\n\nNatural images (scikit-image, {len(names)}), full model: "
            f"{100 * nat_flag.mean():.1f} % flagged (missed: {', '.join(missed) or 'none'}).\n\n"
            "Leave-one-task-out (scope head and calibration fitted without the task):\n\n"
            + markdown_table(oos_rows, [("task", "left-out task", ""), ("n", "its test images", ""),
                                        ("flagged", "flagged out of scope %", ""),
                                        ("inside", "other tasks' test images flagged %", ""),
                                        ("natural", "natural images flagged %", "")])
            + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
