"""Gather finished runs into ``results.json``: every metric per method, task and seed, and summaries.

Layout (``methods.<name>``)::

    label, table, single_task, overrides        the method
    seeds                                       seeds it is planned for
    runs_done, runs_expected                    progress (a single-task seed is one run per task)
    per_seed.<seed>.tasks.<task>                every metric of the evaluate command (dedup and
                                                all_sources views, pixel metrics, routing accuracy)
    per_seed.<seed>.mean                        mean over tasks (only when the seed has every task)
    per_seed.<seed>.runs.<task|all>             training facts: epochs, best epoch, seconds, finished, commit
    summary.<task|MEAN>.<metric>                {mean, std, n}: over the seeds that have it

The tables are generated from this dictionary only (:mod:`medmoe.benchmark.tables`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmoe.benchmark.plan import UNIVERSAL, Method, RunSpec, method_seeds
from medmoe.benchmark.runner import DONE_FILE, METRICS_FILE, is_done
from medmoe.metrics import mean_over_tasks, summarise_seeds

MEAN = "MEAN"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _run_facts(run_dir: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    info = metrics.get("checkpoint_info", {})
    done = json.loads((run_dir / DONE_FILE).read_text(encoding="utf-8"))
    keep = ("epochs", "best_epoch", "best_val_loss", "train_seconds", "n_train", "n_val")
    return {**{k: info.get(k) for k in keep}, **done}


def method_results(method: Method, seeds: Sequence[int], tasks: Sequence[str], runs_root: Path) -> dict[str, Any]:
    """The ``methods.<name>`` entry of ``results.json`` for one method (see the module docstring)."""
    planned = method_seeds(method, seeds)
    per_seed: dict[str, Any] = {}
    done = 0
    for seed in planned:
        entry: dict[str, Any] = {"tasks": {}, "runs": {}}
        for run_task in (tasks if method.single_task else (UNIVERSAL,)):
            run_dir = runs_root / RunSpec(method.name, seed, run_task).key
            if not is_done(run_dir):
                continue
            metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
            entry["tasks"].update({t: metrics["tasks"][t] for t in tasks if t in metrics["tasks"]})
            entry["runs"][run_task] = _run_facts(run_dir, metrics)
            done += 1
        if entry["runs"]:
            entry["tasks"] = {t: entry["tasks"][t] for t in tasks if t in entry["tasks"]}
            if len(entry["tasks"]) == len(tasks):
                entry["mean"] = mean_over_tasks({t: _scalars(v) for t, v in entry["tasks"].items()})
            per_seed[str(seed)] = entry
    return {
        "label": method.label, "table": method.table, "single_task": method.single_task,
        "overrides": list(method.overrides), "seeds": list(planned),
        "runs_done": done, "runs_expected": len(planned) * (len(tasks) if method.single_task else 1),
        "per_seed": per_seed, "summary": summarise(per_seed, tasks),
    }


def seed_values(per_seed: Mapping[str, Any], row: str, metric: str,
                seeds: Sequence[int] | None = None) -> dict[int, float]:
    """``{seed: value}`` of one metric for a task (or :data:`MEAN`) over the seeds that have it."""
    out = {}
    for seed, entry in per_seed.items():
        if seeds is not None and int(seed) not in seeds:
            continue
        values = entry.get("mean") if row == MEAN else entry["tasks"].get(row)
        if values is not None and values.get(metric) is not None:
            out[int(seed)] = float(values[metric])
    return out


def summarise(per_seed: Mapping[str, Any], tasks: Sequence[str],
              seeds: Sequence[int] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{task|MEAN: {metric: {mean, std, n}}}`` over seeds (all, or ``seeds``) for scalar metrics."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in (*tasks, MEAN):
        metrics = sorted({m for e in per_seed.values()
                          for m in _scalars((e.get("mean") if row == MEAN else e["tasks"].get(row)) or {})})
        cells = {}
        for metric in metrics:
            values = seed_values(per_seed, row, metric, seeds)
            if values:
                mean, std = summarise_seeds(list(values.values()))
                cells[metric] = {"mean": mean, "std": std if len(values) > 1 else math.nan, "n": len(values)}
        if cells:
            out[row] = cells
    return out


def build_results(methods: Sequence[Method], seeds: Sequence[int], tasks: Sequence[str], runs_root: Path,
                  header: Mapping[str, Any]) -> dict[str, Any]:
    """The whole ``results.json`` document; the header gains the commits and machines of the finished runs."""
    entries = {m.name: method_results(m, seeds, tasks, runs_root) for m in methods}
    done = sum(e["runs_done"] for e in entries.values())
    expected = sum(e["runs_expected"] for e in entries.values())
    facts = [run for e in entries.values() for seed in e["per_seed"].values() for run in seed["runs"].values()]
    header = {**header, "runs_trained_at": sorted({str(f.get("commit")) for f in facts}),
              "runs_trained_on": sorted({str(f.get("machine")) for f in facts})}
    return {"header": header, "seeds": list(seeds), "tasks": list(tasks),
            "progress": {"runs_done": done, "runs_expected": expected, "complete": done == expected},
            "methods": entries}
