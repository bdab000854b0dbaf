"""Tie it together: run what is missing, then write ``results.json``, the tables and the figures."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from medmoe.atomic import atomic_write_text
from medmoe.benchmark.figures import write_benchmark_figures
from medmoe.benchmark.plan import METHODS, Method, plan_runs
from medmoe.benchmark.results import build_results
from medmoe.benchmark.runner import BenchmarkContext, ManifestSource, run_all
from medmoe.benchmark.tables import TABLE_ROWS, render_table
from medmoe.report.tables import write_json

_log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"


def settings_header(context: BenchmarkContext, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The header of ``results.json``: profile, training settings, provenance (``command`` to reproduce,
    ``invocation`` that wrote the file, ``commit``, ``machine``) and when it was ``written``."""
    config = context.config_for()
    return {"profile": context.profile.name, "description": context.profile.description,
            "resolution": config.model.resolution, "epochs": config.train.epochs,
            "batch_size": config.train.batch_size, "lr": config.train.lr,
            "subsample": str(context.profile.subsample) if context.profile.subsample else None,
            **provenance, "written": datetime.now(UTC).isoformat(timespec="seconds")}


def write_outputs(context: BenchmarkContext, methods: Sequence[Method], seeds: Sequence[int],
                  tasks: Sequence[str], provenance: Mapping[str, Any], *, figures: bool = True) -> dict[str, Any]:
    """Rewrite ``results.json`` from the run folders, then the tables from it and (optionally) the figures.

    ``results.json`` covers ``methods`` and every other method with run folders, so running a subset
    (``--methods``) never drops the others' results. Without run folders (a fresh clone: they are not
    committed), the committed ``results.json`` is kept as it is and only the tables are rendered from
    it, so a report-only call never empties it.
    """
    runs, stored = context.out / "runs", context.out / RESULTS_FILE
    methods = tuple(m for m in METHODS if m in methods or (runs / m.name).is_dir())
    if runs.is_dir() or not stored.is_file():
        write_json(build_results(methods, seeds, tasks, runs, settings_header(context, provenance)), stored)
    else:
        _log.info("no run folders in %s: tables rendered from the committed %s", context.out, RESULTS_FILE)
        figures = False
    results = json.loads(stored.read_text(encoding="utf-8"))  # tables use the file only
    names = {m.name for m in methods}
    for table, rows in TABLE_ROWS.items():
        if names & set(rows):
            atomic_write_text(context.out / f"{table}.md", render_table(results, table))
    if figures:
        write_benchmark_figures(context.out / "runs", context.out / "figures", seeds[0])
    return results


def run_benchmark(context: BenchmarkContext, methods: Sequence[Method], seeds: Sequence[int],
                  provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Run every planned run not finished yet, updating the outputs after each; returns ``results.json``."""
    manifests = ManifestSource(context)
    tasks = manifests.task_ids(seeds[0])
    specs = plan_runs(methods, seeds, tasks)
    _log.info("%d runs planned in %s", len(specs), context.out)
    run_all(context, specs, manifests,
            after_each=lambda _: write_outputs(context, methods, seeds, tasks, provenance))
    return write_outputs(context, methods, seeds, tasks, provenance)
