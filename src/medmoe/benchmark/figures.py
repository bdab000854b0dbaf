"""The paper's figures from stored predictions of the first seed: Fig. 5, 6 and 9.

- ``fig5_histograms_ours.png`` / ``fig5_histograms_no_hq.png``: normal vs abnormal scores, full
  model and without the hallucination map;
- ``fig6_expert_heatmap.png``: which experts each task's test images use (full model);
- ``fig9_tsne_prompts.png``: t-SNE of the router's input with prompts (``[v, tau]``, full model)
  and without (``v``, the no-prompt model).

A figure is drawn only when its runs have finished, and redrawn only when they are newer than it.
Fundus rows from other sources than the normals are left out, as in the primary metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmoe.benchmark.plan import FULL_MODEL, UNIVERSAL, RunSpec
from medmoe.benchmark.runner import PREDICTIONS_FILE, is_done
from medmoe.report.figures import plot_expert_heatmap, plot_score_histograms, plot_tsne


def _load(runs_root: Path, method: str, seed: int) -> tuple[Path, dict[str, np.ndarray]] | None:
    run_dir = runs_root / RunSpec(method, seed, UNIVERSAL).key
    if not is_done(run_dir):
        return None
    path = run_dir / PREDICTIONS_FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    keep = ~arrays["other_source"]
    return path, {k: (v if k == "task_names" else v[keep]) for k, v in arrays.items()}


def _stale(target: Path, sources: Sequence[Path]) -> bool:
    return not target.is_file() or any(s.stat().st_mtime > target.stat().st_mtime for s in sources)


def write_benchmark_figures(runs_root: Path, folder: Path, seed: int) -> list[Path]:
    """Draw the figures whose runs exist; returns every figure file present afterwards."""
    loaded = {m: _load(runs_root, m, seed) for m in (FULL_MODEL, "no_hq", "no_prompt")}
    written: list[Path] = []
    for method, title in ((FULL_MODEL, "full model"), ("no_hq", "without hallucination map")):
        item = loaded[method]
        target = folder / f"fig5_histograms_{method}.png"
        if item is not None and _stale(target, [item[0]]):
            _, p = item
            groups = {str(name): (p["scores"][p["task_indices"] == t], p["labels"][p["task_indices"] == t])
                      for t, name in enumerate(p["task_names"]) if (p["task_indices"] == t).any()}
            plot_score_histograms(target, groups, f"Anomaly scores (test, seed {seed}): {title}", normalise=True)
        written += [target] if target.is_file() else []
    full = loaded[FULL_MODEL]
    target = folder / "fig6_expert_heatmap.png"
    if full is not None and "router_weights" in full[1] and _stale(target, [full[0]]):
        p = full[1]
        plot_expert_heatmap(target, p["router_weights"], p["task_indices"], [str(t) for t in p["task_names"]])
    written += [target] if target.is_file() else []
    no_prompt = loaded["no_prompt"]
    target = folder / "fig9_tsne_prompts.png"
    if full is not None and no_prompt is not None and "router_inputs" in full[1] \
            and _stale(target, [full[0], no_prompt[0]]):
        settings = {"without prompts: v (no-prompt model)": (no_prompt[1]["features"], no_prompt[1]["task_indices"]),
                    "with prompts: [v, tau] (full model)": (full[1]["router_inputs"], full[1]["task_indices"])}
        plot_tsne(target, settings, [str(t) for t in full[1]["task_names"]], seed=seed)
    written += [target] if target.is_file() else []
    return written
