#!/usr/bin/env python
"""Can the anomaly map tell a lesion from another modality? A lead for out-of-scope input (issue 10).

``python benchmarks/trust_spread.py [--runs benchmarks/results/cpu-feat/runs] [--out FILE]`` uses the
leave-one-task-out models of ``add_task_loto.py`` (``runs/loto/<task>/base``: feature_moe trained on
the four other tasks) and **validation data only**. The scope head's distance alone cannot keep
every tumour image in scope and every left-out head CT out (``results/trust-design.md``). A lesion
covers a minority of the image; an image of an untrained modality is unusual *everywhere*. So next
to the scope distance this measures the model's own map at its median location: ``m`` = median of
the anomaly map, divided by the median of ``m`` over the task's validation normals.

Per left-out task ``t`` (its model never saw ``t``): ``t``'s validation images, scored with the
prompt of the trained task the scope head finds nearest (the user's likely mistake), against the
trained tasks' validation normals and synthetic lesions pasted into them (6–20 % of the image; in
scope, with their own prompt). Limits: the 99th percentile of the validation normals' normalised
values (scope: leave-one-out, as the product does). Rules: ``scope`` (the product's), ``map``,
``scope AND map``, ``scope OR map``; the share of each group flagged as out of scope.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/cpu-feat/runs"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.data import default_cache_dir, load_split, run_manifests
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.inference import predict, task_text_embeddings
    from medmoe.engine.trust_fitting import fit_scope, scope_distances
    from medmoe.report.tables import markdown_table
    from medmoe.trust.calibration import fit_calibration

    torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    full = args.runs / "feature_moe" / "seed0" / "all"
    full_checkpoint = load_checkpoint(full)
    manifests = run_manifests(full)

    def split(split_name: str):  # noqa: ANN202 - a LoadedSplit of all five tasks
        return load_split(manifests, full_checkpoint.tasks, split_name, full_checkpoint.config, cache, False)

    train, val = split("train"), split("val")
    rows = []
    for left_out in full_checkpoint.tasks.ids:
        run = args.runs / "loto" / left_out / "base"
        checkpoint = load_checkpoint(run)
        model, config, ids = checkpoint.model, checkpoint.config, checkpoint.tasks.ids
        order = [full_checkpoint.tasks.ids.index(t) for t in ids]  # trained task → index in the full split

        def pick(data, task_index: int) -> torch.Tensor:  # noqa: ANN001
            return data.images[data.task_indices == task_index]

        def features(images: torch.Tensor) -> torch.Tensor:
            return prepared_inputs(model, images, cache_dir=cache, progress=False)

        train_x = [features(pick(train, i)) for i in order]
        head = fit_scope(model, config.model, torch.cat(train_x),
                         torch.cat([torch.full((len(x),), k) for k, x in enumerate(train_x)]), len(ids))
        val_images = [pick(val, i) for i in order]
        val_x = [features(images) for images in val_images]
        val_index = torch.cat([torch.full((len(x),), k) for k, x in enumerate(val_x)])
        val_all = torch.cat(val_x)

        def medians(x: torch.Tensor, task_index: torch.Tensor) -> np.ndarray:
            out = predict(model, x, task_text_embeddings(checkpoint.prompt_embeddings, task_index), prepared=True,
                          keep_maps=True)
            return np.median(out.anomaly_map.reshape(len(x), -1), axis=1)

        val_m = medians(val_all, val_index)
        m_scale = np.array([np.median(val_m[val_index.numpy() == k]) for k in range(len(ids))])
        calibration = fit_calibration(ids, np.zeros(len(val_index)), val_index.numpy(),
                                      scope_distances(model, config.model, head, val_all), "val")
        m_norm = val_m / m_scale[val_index.numpy()]
        m_limit = float(np.quantile(m_norm, 0.99))

        def judge(x: torch.Tensor, task_index: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
            """(out by scope, out by map) per image; ``task_index`` None: the nearest task's prompt."""
            normalised = calibration.normalised(ids, scope_distances(model, config.model, head, x))
            nearest = torch.from_numpy(np.argmin(normalised, axis=1))
            prompt = nearest if task_index is None else task_index
            scope_out = normalised.min(axis=1) > calibration.scope_limit
            map_out = medians(x, prompt) / m_scale[prompt.numpy()] > m_limit
            return scope_out, map_out

        left_images = val.images[val.task_indices == full_checkpoint.tasks.ids.index(left_out)]
        groups = {"left-out task's val images": judge(features(left_images), None)}
        lesions = torch.from_numpy(synthesize_anomalies(torch.cat(val_images).numpy(), np.random.default_rng(0),
                                                        area=(0.06, 0.2))[0])
        groups["synthetic lesions 6–20 % (in scope)"] = judge(
            prepared_inputs(model, lesions, cache_dir=None, progress=False), val_index)
        for group, (scope_out, map_out) in groups.items():
            rows.append({"left_out": left_out, "group": group, "n": str(len(scope_out)),
                         "scope": f"{100 * scope_out.mean():.1f}", "map": f"{100 * map_out.mean():.1f}",
                         "and": f"{100 * (scope_out & map_out).mean():.1f}",
                         "or": f"{100 * (scope_out | map_out).mean():.1f}"})
            print(rows[-1], flush=True)
    table = markdown_table(rows, [("left_out", "left-out task", ""), ("group", "images", ""), ("n", "n", ""),
                                  ("scope", "scope (product) %", ""), ("map", "map median %", ""),
                                  ("and", "scope AND map %", ""), ("or", "scope OR map %", "")])
    text = ("# Out of scope: the scope distance and the anomaly map's median (validation data only)\n\n"
            f"Leave-one-task-out feature_moe models `{args.runs}/loto/<task>/base`; written by "
            "`python benchmarks/trust_spread.py`. Flagged share of each group: the left-out task's images "
            "should be flagged, the synthetic lesions should not.\n\n" + table + "\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
