#!/usr/bin/env python
"""Does the prompt do anything? Score every test image of a trained run with each task's prompt.

``python benchmarks/prompt_effect.py RUN [--out benchmarks/results/cpu-feat/prompt_effect.md]``
loads a run (e.g. ``benchmarks/results/cpu-feat/runs/feature_moe/seed0/all``), scores each task's
test images once with their own task's prompt and once with every other task's, and reports per task:

- the mean total-variation distance between the router weights under the right and a wrong prompt
  (0: the prompt changes nothing; 1: disjoint experts), averaged over the wrong prompts;
- the median ratio of the score under a wrong prompt to the score under the right one;
- the test AUROC under the right prompt and the mean AUROC under the wrong ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder (model.json + model.safetensors + manifests/)")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: print only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=100,
                        help="score at most this many normal and abnormal test images per task (seeded; 0: all)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.data import default_cache_dir, run_manifests
    from medmoe.engine.evaluate import collect
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.inference import predict
    from medmoe.metrics import image_metrics
    from medmoe.report.tables import markdown_table

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.run)
    if checkpoint.prompt_embeddings is None:
        print("this model uses no prompt: nothing to measure", file=sys.stderr)
        return 2
    manifests = run_manifests(args.run)
    if args.per_class:
        from medmoe.data.manifest import Manifest

        rng = np.random.default_rng(0)
        keep = []
        for m in manifests:
            for task in m.tasks:
                for label in (0, 1):
                    rows = [s for s in m.select(split="test", task=task) if s.label == label
                            and "other_source" not in s.flags]
                    keep += [rows[i] for i in sorted(rng.permutation(len(rows))[:args.per_class])]
        manifests = [Manifest(root=m.root, samples=[s for s in m.samples if s in keep]) for m in manifests]
    data = collect(checkpoint, manifests, progress=False)
    primary = np.array(["other_source" not in s.flags for s in data.samples])
    inputs = prepared_inputs(checkpoint.model, data.batch.images, cache_dir=default_cache_dir(), progress=False)
    task_idx = data.batch.task_indices.numpy()
    labels = data.batch.labels.numpy()
    tasks = checkpoint.tasks.ids
    by_prompt = {}
    for p in range(len(tasks)):
        text = checkpoint.prompt_embeddings[torch.full((len(inputs),), p)]
        by_prompt[p] = predict(checkpoint.model, inputs, text, prepared=True)
    rows = []
    for t, task in enumerate(tasks):
        mine = (task_idx == t) & primary
        right = by_prompt[t]
        wrong = [p for p in range(len(tasks)) if p != t]
        tv = [0.5 * np.abs(by_prompt[p].router_weights[mine] - right.router_weights[mine]).sum(axis=1).mean()
              for p in wrong] if right.router_weights is not None else [float("nan")]
        ratio = [np.median(by_prompt[p].score[mine] / np.maximum(right.score[mine], 1e-12)) for p in wrong]
        auc_right = image_metrics(right.score[mine], labels[mine], threshold_val=None).auroc
        auc_wrong = [image_metrics(by_prompt[p].score[mine], labels[mine], threshold_val=None).auroc for p in wrong]
        rows.append({"task": task, "tv": f"{np.mean(tv):.3f}", "ratio": f"{np.median(ratio):.2f}",
                     "auc_right": f"{100 * auc_right:.2f}", "auc_wrong": f"{100 * np.mean(auc_wrong):.2f}"})
    table = markdown_table(rows, [("task", "Task", ""), ("tv", "router weights moved (TV, right → wrong prompt)", ""),
                                  ("ratio", "score ratio wrong / right (median)", ""),
                                  ("auc_right", "AUROC, right prompt", ""), ("auc_wrong", "AUROC, wrong prompts (mean)", "")])
    subset = f"at most {args.per_class} normal and {args.per_class} abnormal (seeded)" if args.per_class else "all"
    text = (f"# Prompt effect: `{args.run}`\n\nEach task's test images (primary view; {subset} per task) scored "
            f"with their own prompt and with each of the other {len(tasks) - 1}. Written by "
            f"`python benchmarks/prompt_effect.py {args.run} --per-class {args.per_class}`.\n\n"
            f"{table}\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
