"""What a benchmark runs: the methods of the paper's Tables 1–3, the profiles, and the run list.

A *method* is a set of config overrides on top of a profile's config; a single-task method is
trained once per task (``train.tasks=[<task>]``), a universal one once on all tasks. Table 1
methods run for every seed; the ablations (Table 2) and the K sweep (Table 3) for the first seed
only, as in the paper. Table 2's full model and Table 3's K = 5 are Table 1's ``ours``. Table 4, a
budget control of ours, retrains the single-task AE and AE-U for as many optimisation steps as one
run on all tasks (first seed only).

The ``cpu-feat`` profile has tables of its own: ``feat1`` (``feature_moe`` against the peers a user
would pick instead — per-task and universal PatchCore, at their strongest with the cosine memory that won
on validation and per task as published, a position-aware patch kNN, per-task feature 1-NN — on the same
trunk features and splits,
plus ``feature_moe`` as 0.2.0 shipped it and the pixel model; every seed), ``feat2`` (its hallucination and prompt
ablations) and ``feat3`` (K = 1…4 and N = 8 experts), the last two for the first seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medmoe.errors import ConfigError
from medmoe.model.registry import architecture

TABLES = ("table1", "table2", "table3", "table4", "feat1", "feat2", "feat3")
PAPER_TABLES = TABLES[:4]
FEATURE_TABLES = TABLES[4:]
ALL_SEED_TABLES = ("table1", "feat1")
"""Tables whose methods run for every seed (the others for the first)."""
UNIVERSAL = "all"
"""The ``task`` of a run trained on every task."""


def _baseline(name: str, **free: bool) -> tuple[str, ...]:
    """The overrides of a baseline: its registry entry's fixed settings, and ``free`` ones."""
    return architecture(name).overrides(**free)


PIXEL_MODEL = ("model.architecture=pixel_moe", "model.resolution=64", "train.epochs=40", "train.lr=5e-4",
               "train.selection=val_loss")
"""The paper's pixel model with the cpu-64 profile's settings, as a row of the feature tables."""


@dataclass(frozen=True)
class Method:
    """One row of a results table.

    Attributes:
        name: key in ``results.json`` and run-folder name.
        label: row label in the tables.
        table: the table it belongs to (``table1``, ``table2``, ``table3``).
        overrides: ``section.field=value`` items applied on top of the profile's config.
        single_task: trained once per task instead of once on all tasks.
        equal_steps: a single-task method trained for as many optimisation steps as one run on all
            tasks of the same profile: its epochs are raised per task (see ``BenchmarkContext.config_for``).
    """

    name: str
    label: str
    table: str
    overrides: tuple[str, ...] = ()
    single_task: bool = False
    equal_steps: bool = False


METHODS: tuple[Method, ...] = (
    Method("ours", "Ours (prompt MoE, HQ, N=K=5)", "table1"),
    Method("universal_ae", "AE, universal (all tasks, no prompt)", "table1", _baseline("ae")),
    Method("ae", "AE, single-task", "table1", _baseline("ae"), single_task=True),
    Method("ae_u", "AE-U, single-task (HQ decoder)", "table1", _baseline("ae_u"), single_task=True),
    Method("memae", "MemAE, single-task", "table1", _baseline("memae"), single_task=True),
    Method("no_hq", "Ours without HQ (✗HQ ✓TP)", "table2", ("model.hallucination=false",)),
    Method("no_prompt", "Ours without TP (✓HQ ✗TP)", "table2", ("model.prompt=false",)),
    Method("router_norm", "Ours, router inputs layer-normalised (not in the paper)", "table2",
           ("model.router_norm=true",)),
    *(Method(f"k{k}", f"K = {k}", "table3", (f"model.top_k={k}",)) for k in range(1, 5)),
    Method("ae_steps", "AE, single-task, steps of a universal run", "table4", _baseline("ae"),
           single_task=True, equal_steps=True),
    Method("ae_u_steps", "AE-U, single-task, steps of a universal run", "table4", _baseline("ae_u"),
           single_task=True, equal_steps=True),
    Method("feature_moe", "Ours on trunk features (feature_moe, HQ, N=K=5)", "feat1"),
    Method("feature_moe_euclidean", "feature_moe with euclidean memories (the cpu-feat profile of 0.2.0)", "feat1",
           ("model.memory_distance=euclidean",)),
    Method("patchcore", "PatchCore, per task (the prompt picks the bank), cosine", "feat1",
           (*_baseline("patchcore", prompt=True), "model.memory_distance=cosine")),
    Method("patchcore_euclidean", "PatchCore, per task, euclidean (as published)", "feat1",
           (*_baseline("patchcore", prompt=True), "model.memory_distance=euclidean")),
    Method("patchcore_universal", "PatchCore, one universal bank (no prompt), cosine", "feat1",
           (*_baseline("patchcore", prompt=False), "model.memory_distance=cosine")),
    Method("patch_knn", "Position-aware patch kNN, per task (every patch, ±2 cells, cosine)", "feat1",
           (*_baseline("patchcore", prompt=True), "model.memory_distance=cosine", "model.memory_coverage=1",
            "model.memory_window=2")),
    Method("feature_nn", "1-NN on the pooled trunk feature, per task", "feat1", _baseline("feature_nn")),
    Method("pixel_ours", "Ours, the paper's pixel model (64×64, 40 epochs)", "feat1", PIXEL_MODEL),
    Method("feat_no_hq", "feature_moe without HQ (✗HQ ✓TP)", "feat2", ("model.hallucination=false",)),
    Method("feat_no_prompt", "feature_moe without TP (✓HQ ✗TP)", "feat2", ("model.prompt=false",)),
    *(Method(f"feat_k{k}", f"K = {k}", "feat3", (f"model.top_k={k}",)) for k in range(1, 5)),
    Method("feat_n8", "N = 8 experts, K = 8", "feat3", ("model.num_experts=8", "model.top_k=8")),
)
"""Every method, in run order within a seed."""
METHOD_BY_NAME = {m.name: m for m in METHODS}
FULL_MODEL = "ours"
"""Table 2's ``✓HQ ✓TP`` row and Table 3's ``K = 5`` row."""
FEATURE_MODEL = "feature_moe"
"""The same for the feature tables (``feat2``, ``feat3``)."""


@dataclass(frozen=True)
class Subsample:
    """Per task, keep at most this many training and validation normals, and test images per class."""

    train: int
    val: int
    test_per_class: int


@dataclass(frozen=True)
class Profile:
    """A named benchmark setting.

    Attributes:
        name: results go to ``benchmarks/results/<name>/``.
        config: YAML file of a packaged profile (:data:`medmoe.engine.config.PROFILE_DIR`; ``None``: the
            built-in defaults).
        overrides: applied to every run, before the method's.
        subsample: shrink the data (smoke runs), or ``None`` for all of it.
        description: one line for the README and table headers.
        tables: the tables it runs (their methods, when none are named).
    """

    name: str
    config: str | None
    overrides: tuple[str, ...] = ()
    subsample: Subsample | None = None
    description: str = ""
    tables: tuple[str, ...] = PAPER_TABLES


PROFILES: dict[str, Profile] = {
    "cpu-64": Profile("cpu-64", "cpu-64.yaml",
                      description="64×64, epochs of the cpu-64 profile, sized for a 2-core CPU"),
    "paper-256": Profile("paper-256", "paper-256.yaml",
                         description="the paper's 256×256 and 250 epochs (needs a GPU)"),
    "quick": Profile("quick", "cpu-64.yaml", ("train.epochs=1", "model.resolution=32"),
                     Subsample(train=48, val=8, test_per_class=16),
                     description="smoke run: 32×32, 1 epoch, ≤48 training normals and ≤16 test images "
                                 "per class per task — exercises every table, numbers mean nothing"),
    "cpu-feat": Profile("cpu-feat", "cpu-feat.yaml", tables=FEATURE_TABLES,
                        description="feature_moe and its peers on frozen EfficientNet-Lite0 features, "
                                    "the cpu-feat profile, sized for a 2-core CPU"),
    "quick-feat": Profile("quick-feat", "cpu-feat.yaml", ("train.epochs=1", "model.resolution=64"),
                          Subsample(train=48, val=8, test_per_class=16), tables=FEATURE_TABLES,
                          description="smoke run of the feature tables — numbers mean nothing"),
}


@dataclass(frozen=True)
class RunSpec:
    """One training + evaluation.

    Attributes:
        method: the method's name.
        seed: ``train.seed`` (also seeds the data splits).
        task: the task trained on, or :data:`UNIVERSAL`.
    """

    method: str
    seed: int
    task: str

    @property
    def key(self) -> str:
        """``<method>/seed<k>/<task>``: the run's folder under ``runs/``."""
        return f"{self.method}/seed{self.seed}/{self.task}"

    def overrides(self) -> tuple[str, ...]:
        """The method's overrides plus seed and task selection."""
        extra: tuple[str, ...] = (f"train.seed={self.seed}",)
        if self.task != UNIVERSAL:
            extra += (f"train.tasks=[{self.task}]",)
        return METHOD_BY_NAME[self.method].overrides + extra


def method_seeds(method: Method, seeds: Sequence[int]) -> tuple[int, ...]:
    """Seeds a method runs for: all for Tables 1 and feat1, the first for the ablation tables."""
    return tuple(seeds) if method.table in ALL_SEED_TABLES else tuple(seeds[:1])


def select_methods(names: Sequence[str] | None, tables: Sequence[str] = PAPER_TABLES) -> tuple[Method, ...]:
    """The named methods (when ``names`` is empty, those of ``tables``), in :data:`METHODS` order."""
    if not names:
        return tuple(m for m in METHODS if m.table in tables)
    unknown = sorted(set(names) - set(METHOD_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join(METHOD_BY_NAME)}")
    return tuple(m for m in METHODS if m.name in names)


def plan_runs(methods: Sequence[Method], seeds: Sequence[int], tasks: Sequence[str]) -> list[RunSpec]:
    """Every run, ordered so partial results are useful: Table 1 seed by seed, then Tables 2–4.

    Args:
        methods: the methods to run.
        seeds: the benchmark's seeds (the first also serves Tables 2 and 3).
        tasks: task ids, for single-task methods.
    """
    if not seeds:
        raise ConfigError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {list(seeds)}")
    runs = []
    for table in TABLES:
        for seed in seeds:
            for method in methods:
                if method.table == table and seed in method_seeds(method, seeds):
                    for task in (tasks if method.single_task else (UNIVERSAL,)):
                        runs.append(RunSpec(method.name, seed, task))
    return runs
