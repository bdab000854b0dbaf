"""Run a benchmark: every planned run trained, evaluated and stored, resumable at any point.

Each run lives in ``<out>/runs/<method>/seed<k>/<task>/`` (git-ignored): the engine's run folder
(checkpoint, resume state, history, manifests) plus

- ``benchmark_run.json`` — the run's resolved configuration, written before training; a folder
  holding another configuration is an error, never silently reused;
- ``metrics.json`` / ``metrics.md`` — the evaluate command's report on the test split;
- ``predictions.npz`` — per test image: score, label, task, features (and router weights and router
  inputs for the MoE), for the figures;
- ``done.json`` — written last: the run is finished (its resume state ``checkpoints/last.pt`` is
  then deleted; the selected model stays).

A run with ``done.json`` is skipped; one with a checkpoint but no ``done.json`` is evaluated; one
with only a resume state continues training from its last finished epoch. Several processes may run
the same benchmark side by side: each run is claimed (``claimed.json``) by the process that trains it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.benchmark.claim import claim, claim_owner
from medmoe.benchmark.plan import METHOD_BY_NAME, Profile, RunSpec, Subsample
from medmoe.data.manifest import Manifest, Sample, write_manifest
from medmoe.engine.checkpoint import META_NAME, Checkpoint, load_checkpoint
from medmoe.engine.config import RunConfig, load_config
from medmoe.engine.data import MANIFEST_DIR, resolve_data, select_tasks
from medmoe.engine.evaluate import EvaluationData
from medmoe.engine.train import RESUME_FILE, steps_per_epoch, task_registry, train
from medmoe.errors import ConfigError
from medmoe.report.evaluation_report import evaluate_run

_log = logging.getLogger(__name__)

RUN_SPEC_FILE = "benchmark_run.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
DONE_FILE = "done.json"


@dataclass(frozen=True)
class BenchmarkContext:
    """What every run of one benchmark shares.

    Attributes:
        profile: the profile.
        config_dir: folder of the profile's YAML config.
        data: data root(s) or manifests, as for ``medmoe train --data``.
        out: results folder (``benchmarks/results/<profile>``).
        extra_overrides: applied last to every run (e.g. ``train.epochs=2``); they must not
            change between invocations of a resumed benchmark.
        progress: show progress bars.
        provenance: facts recorded in each run's ``done.json`` (commit, machine).
    """

    profile: Profile
    config_dir: Path
    data: tuple[str, ...]
    out: Path
    extra_overrides: tuple[str, ...] = ()
    progress: bool = False
    provenance: dict[str, Any] | None = None

    def run_dir(self, spec: RunSpec) -> Path:
        """The run's folder."""
        return self.out / "runs" / spec.key

    def config_for(self, spec: RunSpec | None = None, manifests: Sequence[Manifest] = ()) -> RunConfig:
        """The resolved configuration of one run (``None``: the profile's, without a method).

        An equal-steps method (``Method.equal_steps``) needs the run's ``manifests``: its epochs are
        :func:`equal_step_epochs` of its task.
        """
        path = self.config_dir / self.profile.config if self.profile.config else None
        overrides = (*self.profile.overrides, *(spec.overrides() if spec is not None else ()), *self.extra_overrides)
        config = load_config(path, overrides)
        if spec is None or not METHOD_BY_NAME[spec.method].equal_steps:
            return config
        return load_config(path, (*overrides, f"train.epochs={equal_step_epochs(config, manifests, spec.task)}"))


def equal_step_epochs(config: RunConfig, manifests: Sequence[Manifest], task: str) -> int:
    """Epochs on ``task``'s training normals that take as many optimisation steps as
    ``config.train.epochs`` epochs on every training normal of ``manifests`` (at least that many epochs)."""
    counts = Counter(s.task for m in manifests for s in m.select(split="train"))
    if not counts.get(task):
        raise ConfigError(f"no training images of task '{task}' in the benchmark data")
    batch = config.train.batch_size
    steps = config.train.epochs * steps_per_epoch(sum(counts.values()), batch)
    return math.ceil(steps / steps_per_epoch(counts[task], batch))


class ManifestSource:
    """Manifests per seed, prepared once (seeded splits depend on the seed) and subsampled if asked."""

    def __init__(self, context: BenchmarkContext) -> None:
        self._context = context
        self._by_seed: dict[int, list[Manifest]] = {}

    def __call__(self, seed: int) -> list[Manifest]:
        if seed not in self._by_seed:
            val = self._context.config_for().data.val_fraction
            manifests = resolve_data(list(self._context.data), seed=seed, val_fraction=val)
            sub = self._context.profile.subsample
            self._by_seed[seed] = [subsample(m, sub, seed) for m in manifests] if sub else manifests
        return self._by_seed[seed]

    def task_ids(self, seed: int) -> tuple[str, ...]:
        """The tasks present in the data, in registry order."""
        return tuple(select_tasks(task_registry(self._context.config_for()), self(seed)).ids)


def subsample(manifest: Manifest, sub: Subsample, seed: int) -> Manifest:
    """A seeded subset: per task ≤ ``sub.train``/``sub.val`` normals and ≤ ``sub.test_per_class``
    test images per label, preferring rows without flags (so the primary view keeps its rows)."""
    rng = np.random.default_rng(seed)
    limits = {"train": sub.train, "val": sub.val}
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for s in manifest.samples:
        groups.setdefault((s.task, s.split, s.label), []).append(s)
    kept: list[Sample] = []
    for (_, split, _), rows in groups.items():
        limit = limits.get(split, sub.test_per_class)
        rank = rng.random(len(rows))
        order = sorted(range(len(rows)), key=lambda i: (bool(rows[i].flags), rank[i]))  # noqa: B023
        kept += [rows[i] for i in sorted(order[:limit])]
    return Manifest(root=manifest.root, samples=kept, meta={**manifest.meta, "subsample": str(sub)})


def is_done(run_dir: Path) -> bool:
    """Whether the run finished (``done.json`` exists)."""
    return (run_dir / DONE_FILE).is_file()


def execute_run(context: BenchmarkContext, spec: RunSpec, manifests: list[Manifest]) -> Path:
    """Train (or resume) and evaluate one run; returns its folder. A finished run is left as it is."""
    run_dir = context.run_dir(spec)
    config = context.config_for(spec, manifests)
    wanted = {"spec": spec.key, "config": config.to_dict()}
    check_stored_config(run_dir, wanted)
    if is_done(run_dir):
        return run_dir
    atomic_write_text(run_dir / RUN_SPEC_FILE, json.dumps(wanted, indent=1) + "\n")
    for manifest in manifests:
        write_manifest(manifest, run_dir / MANIFEST_DIR / f"{'+'.join(manifest.tasks) or 'empty'}.csv")
    started = time.perf_counter()
    if not (run_dir / META_NAME).is_file():
        train(config, manifests, run_dir, resume=(run_dir / RESUME_FILE).is_file(), progress=context.progress)
    checkpoint = load_checkpoint(run_dir)
    data = evaluate_run(checkpoint, manifests, run_dir / METRICS_FILE, split="test", progress=context.progress).data
    atomic_write_bytes(run_dir / PREDICTIONS_FILE, _predictions_npz(checkpoint, data))
    done = {"finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds_this_session": round(time.perf_counter() - started, 1), **(context.provenance or {})}
    atomic_write_text(run_dir / DONE_FILE, json.dumps(done, indent=1) + "\n")
    (run_dir / RESUME_FILE).unlink(missing_ok=True)  # the resume state (weights + Adam moments) is no longer needed
    return run_dir


def check_stored_config(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``run_dir`` holds a run of another configuration.

    The image cache location (``data.cache_dir``) does not change results and is not compared; a
    setting added to the schema after the run was stored counts at its default.
    """
    path = run_dir / RUN_SPEC_FILE
    if not path.is_file():
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    # read through today's schema: a setting added since, at its default, is the same run
    stored["config"] = RunConfig.from_dict(stored["config"], stored=True).to_dict()
    if _without_cache(stored) != _without_cache(wanted):
        raise ConfigError(f"run folder '{run_dir}' holds a run with another configuration; delete it or "
                          "use another --out (the settings of a resumed benchmark must not change)")


def _without_cache(run: dict[str, Any]) -> dict[str, Any]:
    config = run.get("config", {})
    return {**run, "config": {**config, "data": {k: v for k, v in config.get("data", {}).items()
                                                  if k != "cache_dir"}}}


@torch.no_grad()
def router_inputs(checkpoint: Checkpoint, features: np.ndarray, task_indices: np.ndarray) -> np.ndarray | None:
    """What the MoE's router sees (:meth:`PromptMoE.router_input`), ``(n, latent + prompt_dim)``;
    ``None`` without prompts."""
    model = checkpoint.model
    if getattr(model, "prompt_encoder", None) is None or checkpoint.prompt_embeddings is None:
        return None
    text = checkpoint.prompt_embeddings[torch.from_numpy(task_indices)]
    return model.router_input(torch.from_numpy(features), text).numpy()


def _predictions_npz(checkpoint: Checkpoint, data: EvaluationData) -> bytes:
    preds = data.predictions
    features = preds.required("features")
    task_idx = data.batch.task_indices.numpy()
    arrays: dict[str, np.ndarray] = {
        "scores": preds.score, "labels": data.batch.labels.numpy(), "task_indices": task_idx,
        "task_names": np.array(checkpoint.tasks.ids), "features": features,
        "other_source": np.array(["other_source" in s.flags for s in data.samples]),
    }
    if preds.router_weights is not None:
        arrays["router_weights"] = preds.router_weights
    route = router_inputs(checkpoint, features, task_idx)
    if route is not None:
        arrays["router_inputs"] = route
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def run_all(context: BenchmarkContext, specs: Sequence[RunSpec], manifests: ManifestSource,
            after_each: Callable[[RunSpec], object] | None = None) -> list[RunSpec]:
    """Execute ``specs`` in order, skipping finished ones and those another process has claimed
    (:mod:`medmoe.benchmark.claim`); ``after_each`` is called after every new run.

    Returns:
        The runs that were executed in this call (not the skipped ones).
    """
    executed = []
    for number, spec in enumerate(specs, start=1):
        run_dir = context.run_dir(spec)
        if is_done(run_dir):
            config = context.config_for(spec, manifests(spec.seed))
            check_stored_config(run_dir, {"spec": spec.key, "config": config.to_dict()})
            continue
        with claim(run_dir) as mine:
            if not mine:
                _log.info("[%d/%d] %s: running in another process %s; skipped", number, len(specs), spec.key,
                          claim_owner(run_dir))
                continue
            if is_done(run_dir):  # finished by another process since the check above
                continue
            _log.info("[%d/%d] %s", number, len(specs), spec.key)
            started = time.perf_counter()
            execute_run(context, spec, manifests(spec.seed))
        _log.info("[%d/%d] %s finished in %.0f s", number, len(specs), spec.key, time.perf_counter() - started)
        executed.append(spec)
        if after_each is not None:
            after_each(spec)
    return executed
