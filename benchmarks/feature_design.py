#!/usr/bin/env python
"""Design choices of ``feature_moe``, decided on validation data only.

``python benchmarks/feature_design.py --data ROOT [--variants NAME ...] [--epochs 20]`` trains
``feature_moe`` (``the cpu-feat profile`` plus each variant's overrides) on the training normals of
the five tasks and scores each task's **validation** normals against synthetic anomalies made from
those same validation normals (:mod:`medmoe.data.anomalies`, seeded). The test split is never
loaded. It prints and appends to ``benchmarks/results/feature-design.json`` and rewrites
``feature-design.md`` from all recorded variants, losers included.

Each variant is a list of ``section.field=value`` overrides; see :data:`VARIANTS`. ``--runs NAME=RUN`` scores
runs trained elsewhere instead, and ``--rescore SETTING=VALUE`` also scores each of them with a scoring setting
of its family replaced (e.g. ``hybrid_weight=0.75``), without retraining.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from copy import copy as copy_module
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "cosine": ["model.feature_error=cosine"],
    "no_hallucination": ["model.hallucination=false"],
    "q0.9": ["model.error_quantile=0.9"],
    "q0.1": ["model.error_quantile=0.1"],
    "top1%": ["model.score_top_fraction=0.01"],
    "top10%": ["model.score_top_fraction=0.1"],
    "dropout0": ["model.feature_dropout=0.0"],
    "dropout0.5": ["model.feature_dropout=0.5"],
    "res64": ["model.resolution=64"],
    "res224": ["model.resolution=224"],
    "stages1-3": ["model.trunk_stages=[1,3]"],
    "stages2-3-4": ["model.trunk_stages=[2,3,4]"],
    "stages3-5": ["model.trunk_stages=[3,5]"],
    "width256": ["model.feature_width=256"],
    "epochs40": ["train.epochs=40"],
    "router_norm": ["model.router_norm=true"],
    "retrieve": ["model.feature_expert=retrieve", "train.epochs=5"],
    "retrieve_top10%": ["model.feature_expert=retrieve", "train.epochs=5", "model.score_top_fraction=0.1"],
    "retrieve_top1%": ["model.feature_expert=retrieve", "train.epochs=5", "model.score_top_fraction=0.01"],
    "retrieve_top10%_no_hq": ["model.feature_expert=retrieve", "train.epochs=5", "model.score_top_fraction=0.1",
                              "model.hallucination=false"],
    "retrieve_top10%_q0.9": ["model.feature_expert=retrieve", "train.epochs=5", "model.score_top_fraction=0.1",
                             "model.error_quantile=0.9"],
    "retrieve_top10%_e10": ["model.feature_expert=retrieve", "train.epochs=10", "model.score_top_fraction=0.1"],
    "reconstruct_top10%": ["model.score_top_fraction=0.1"],
    "hybrid_top10%": ["model.feature_expert=hybrid", "model.score_top_fraction=0.1"],
    # cosine memories (benchmarks/results/patch-memory.md: the lever of a training-free patch memory)
    "hybrid_cosine": ["model.feature_expert=hybrid", "model.score_top_fraction=0.1", "model.memory_distance=cosine"],
    "hybrid_cosine_top1%": ["model.feature_expert=hybrid", "model.score_top_fraction=0.01",
                            "model.memory_distance=cosine"],
    "retrieve_cosine_top10%": ["model.feature_expert=retrieve", "train.epochs=5", "model.score_top_fraction=0.1",
                               "model.memory_distance=cosine"],
    "retrieve_cosine_top1%": ["model.feature_expert=retrieve", "train.epochs=5", "model.score_top_fraction=0.01",
                              "model.memory_distance=cosine"],
}


def validation_auroc(checkpoint, manifests, seed: int,  # noqa: ANN001
                    rescorings: Sequence[dict[str, str]] = ({},)) -> list[dict[str, float]]:
    """Per task: AUROC of the model's scores, validation normals vs synthetic anomalies made from them.

    One result per entry of ``rescorings``: settings of the model's family (e.g. ``{"hybrid_weight": "0.75"}``)
    replaced at scoring time, for those that change how a trained model scores, not what it learned; the trunk
    features are computed once for all of them.
    """
    import numpy as np
    import torch

    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.data.dataset import ImageDataset
    from medmoe.engine.data import default_cache_dir
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.inference import predict, task_text_embeddings
    from medmoe.metrics import image_metrics

    model, tasks = checkpoint.model, checkpoint.tasks
    results: list[dict[str, float]] = [{} for _ in rescorings]
    for t, task in enumerate(tasks):
        entries = [(m, s) for m in manifests for s in m.select(split="val", task=task.id)]
        if len(entries) < 2:
            continue
        batch = ImageDataset(entries, tasks, resolution=checkpoint.config.model.resolution,
                             cache_dir=default_cache_dir(), with_masks=False,
                             channels=checkpoint.config.model.in_channels).materialize(progress=False)
        normal = batch.images.numpy()
        abnormal, _ = synthesize_anomalies(normal, np.random.default_rng(seed * 1000 + t))
        images = torch.cat([batch.images, torch.from_numpy(abnormal)])
        inputs = prepared_inputs(model, images, cache_dir=None, progress=False)
        text = task_text_embeddings(checkpoint.prompt_embeddings, torch.full((len(images),), t))
        labels = np.r_[np.zeros(len(normal), int), np.ones(len(abnormal), int)]
        for result, changes in zip(results, rescorings, strict=True):
            scores = predict(rescored(model, changes), inputs, text, prepared=True).score
            result[task.id] = 100 * image_metrics(scores, labels, threshold_val=None).auroc
    for result in results:
        result["mean"] = float(np.mean(list(result.values())))
    return results


def rescored(model, changes: dict[str, str]):  # noqa: ANN001, ANN201
    """``model`` with its family settings ``changes`` (name → value as YAML text) in place; itself for none."""
    import yaml

    if not changes:
        return model
    settings = model.config.settings
    typed = {name: yaml.safe_load(value) for name, value in changes.items()}
    copy = copy_module(model)
    copy.settings = dataclasses.replace(settings, **typed)
    copy.config = dataclasses.replace(model.config, settings=copy.settings)
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[], help="data root or manifests (default: $MEDMOE_DATA)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="variants to run")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--runs", nargs="+", default=[], metavar="NAME=RUN",
                        help="score runs trained elsewhere (e.g. by benchmarks/run.py, with this --seed's split) "
                             "as variants NAME, instead of training --variants")
    parser.add_argument("--rescore", nargs="+", default=[], metavar="SETTING=VALUE[,SETTING=VALUE]",
                        help="with --runs: also score each run with these scoring settings in place (e.g. "
                             "hybrid_weight=0.75), one variant each; no retraining")
    args = parser.parse_args(argv)

    import torch

    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.config import DataConfig, load_config
    from medmoe.engine.data import resolve_data
    from medmoe.engine.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    manifests = resolve_data(args.data, seed=args.seed, val_fraction=DataConfig().val_fraction)
    log_path = RESULTS / "feature-design.json"
    records = json.loads(log_path.read_text()) if log_path.is_file() else []
    for name, trained in _variants(args):
        scored: list[tuple[str, list[str], dict[str, float]]]
        if trained is None:
            overrides = [*VARIANTS[name], *args.set, f"train.seed={args.seed}"]
            config = load_config("cpu-feat", overrides)
            with tempfile.TemporaryDirectory() as run:
                started = time.perf_counter()
                train(config, manifests, run, progress=False)
                seconds: float | None = round(time.perf_counter() - started, 1)
                scored = [(name, overrides, validation_auroc(load_checkpoint(run), manifests, args.seed)[0])]
        else:
            checkpoint = load_checkpoint(trained)
            seconds = checkpoint.info.get("train_seconds")
            rescorings = [{}, *(_settings(text) for text in args.rescore)]
            aurocs = validation_auroc(checkpoint, manifests, args.seed, rescorings)
            scored = [(name + "".join(f" [{k}={v}]" for k, v in changes.items()),
                       [f"trained elsewhere: {trained}", *(f"rescored: model.{k}={v}" for k, v in changes.items())],
                       auroc) for changes, auroc in zip(rescorings, aurocs, strict=True)]
        for variant, overrides, auroc in scored:
            record = {"variant": variant, "overrides": overrides, "seed": args.seed, "val_synthetic_auroc": auroc,
                      "train_seconds": seconds, "machine": f"{platform.processor() or platform.machine()}, "
                      f"{torch.get_num_threads()} threads", "when": datetime.now(UTC).isoformat(timespec="seconds")}
            records.append(record)
            print(json.dumps(record), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        log_path.write_text(json.dumps(records, indent=1) + "\n")
        write_markdown(records, RESULTS / "feature-design.md")
    return 0


def _settings(text: str) -> dict[str, str]:
    """``"a=1,b=2"`` → ``{"a": "1", "b": "2"}`` (a ``--rescore`` entry)."""
    pairs = [item.split("=", 1) for item in text.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--rescore takes SETTING=VALUE[,SETTING=VALUE], not {text!r}")
    return dict(pairs)


def _variants(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """``(name, run folder)`` of each ``--runs NAME=RUN``, or ``(name, None)`` of each variant to train."""
    if not args.runs:
        return [(name, None) for name in args.variants]
    if any("=" not in r for r in args.runs):
        raise SystemExit("--runs takes NAME=RUN pairs")
    return [(name, run) for name, run in (r.split("=", 1) for r in args.runs)]


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def write_markdown(records: list[dict], path: Path) -> None:
    """All recorded variants as one table (validation AUROC, synthetic anomalies; never test)."""
    tasks = [k for k in records[0]["val_synthetic_auroc"] if k != "mean"]
    lines = ["# feature_moe design choices: validation AUROC (normals vs synthetic anomalies made from them)", "",
             ("Written by `benchmarks/feature_design.py`; the test split is never loaded. Base: "
             "`the cpu-feat profile`."), "",
             "| variant | overrides | " + " | ".join(tasks) + " | mean | train s | seed |",
             "|---|---|" + "---:|" * (len(tasks) + 3)]
    for r in records:
        a = r["val_synthetic_auroc"]
        extra = [o for o in r["overrides"] if not o.startswith("train.seed=")]
        lines.append(f"| {r['variant']} | {' '.join(extra) or '–'} | " + " | ".join(f"{a.get(t, float('nan')):.1f}" for t in tasks)
                     + f" | {a['mean']:.1f} | {_seconds(r['train_seconds'])} | {r['seed']} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
