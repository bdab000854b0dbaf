"""``table1.md``, ``table2.md``, ``table3.md`` from ``results.json`` alone, with the paper's numbers beside ours.

Cells are ``mean ± std`` over seeds, ×100. A cell resting on fewer seeds than the table plans says
``(n=k)``; a method without finished runs shows ``n/a``; the header says ``partial: n of m runs``
until every run of the table has finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medmoe.benchmark.paper import PAPER, PAPER_DATA_NOTE, PAPER_DATASETS
from medmoe.benchmark.plan import ALL_SEED_TABLES, FEATURE_MODEL, FULL_MODEL, METHOD_BY_NAME
from medmoe.benchmark.results import MEAN, seed_values
from medmoe.metrics import summarise_seeds
from medmoe.report.tables import MISSING, TEST_PEEKING_NOTE, VALIDATION_NOTE, format_mean_std, markdown_table

PAPER_METRICS = ("auroc", "f1_best", "acc_best")
DEPLOYABLE_METRICS = ("ap", "f1_val", "acc_val")
HEADERS = {"auroc": "AUC", "f1_best": "F1†", "acc_best": "ACC†", "ap": "AP", "f1_val": "F1 (val thr)",
           "acc_val": "ACC (val thr)"}
TABLE_ROWS = {
    "table1": ("ours", "universal_ae", "ae", "ae_u", "memae"),
    "table2": ("no_hq", "no_prompt", FULL_MODEL, "router_norm"),
    "table3": ("k1", "k2", "k3", "k4", FULL_MODEL),
    "table4": ("ae_steps", "ae_u_steps", "ae", "ae_u", "universal_ae", FULL_MODEL),
    "feat1": (FEATURE_MODEL, "feature_moe_euclidean", "patchcore", "patchcore_euclidean", "patchcore_universal",
              "patch_knn", "feature_nn", "pixel_ours"),
    "feat2": ("feat_no_hq", "feat_no_prompt", FEATURE_MODEL),
    "feat3": ("feat_k1", "feat_k2", "feat_k3", "feat_k4", FEATURE_MODEL, "feat_n8"),
}
ROW_LABELS = {"table2": {"no_hq": "✗HQ ✓TP (no hallucination map)", "no_prompt": "✓HQ ✗TP (no prompt)",
                         FULL_MODEL: "✓HQ ✓TP (full model)",
                         "router_norm": "✓HQ ✓TP, router inputs layer-normalised (ours, not in the paper)"},
              "table3": {FULL_MODEL: "K = 5 (full model)"},
              "feat2": {"feat_no_hq": "✗HQ ✓TP (no hallucination map)", "feat_no_prompt": "✓HQ ✗TP (no prompt)",
                        FEATURE_MODEL: "✓HQ ✓TP (full feature_moe)"},
              "feat3": {FEATURE_MODEL: "K = 5, N = 5 (full feature_moe)"}}
TITLES = {
    "table1": "Table 1 — our model against single-task and universal baselines",
    "table2": "Table 2 — ablation: hallucination quantification (HQ) and text prompting (TP)",
    "table3": "Table 3 — number of active experts K (N = 5)",
    "table4": ("Table 4 (ours, not in the paper) — budget control: single-task baselines with the steps of a "
               "universal run"),
    "feat1": ("Feature Table 1 — feature_moe against PatchCore, feature 1-NN and the pixel model, on one trunk and "
              "one split"),
    "feat2": "Feature Table 2 — feature_moe ablation: hallucination quantification (HQ) and text prompting (TP)",
    "feat3": "Feature Table 3 — feature_moe: active experts K (N = 5) and N = 8 experts for five tasks",
}
AGAINST = {"feat1": (FEATURE_MODEL, "patchcore")}
"""Tables with a Δ section: (ours, the peer), AUROC paired by seed."""
SINGLE_VS_UNIVERSAL = {"table1": ("ae", "ae_u", "memae"), "table4": ("ae_steps", "ae_u_steps", "ae", "ae_u")}
"""The single-task rows of each table's universal-vs-single section; the first two are paired with
the universal AE and with ours."""


FEATURE_NOTES = {
    "feat1": (("Every feature method reads the same cached EfficientNet-Lite0 features (stages and resolution of "
              "`the cpu-feat profile`) of the same split. PatchCore keeps 1 % of the training patches per bank "
              "(greedy coreset; anomalib's default is 10 %), scores the maximum patch distance, cosine unless "
              "named euclidean (cosine won on validation: `benchmarks/results/patch-memory.md`). The position-aware "
              "patch kNN keeps every training patch and compares a patch only with those within ±2 cells "
              "of its position (the window that won on validation). 1-NN scores the distance of the "
              "mean-pooled feature. None of them trains. The pixel model is the paper's, at 64×64 "
              "with the cpu-64 profile's 40 epochs."),
              ("No paper rows: the paper has no feature-space model. Italic paper rows are in "
              "`benchmarks/results/cpu-64`.")),
    "feat2": (("The paper's Table 2 for feature_moe (no hallucination map: plain mean error; no prompt: the router "
              "sees the image feature only)."),),
    "feat3": (("K = 1…4 keep the K largest router weights (renormalised); N = 8 gives the router three experts no "
              "task is matched to by the routing loss."),),
}


def cell(values: Mapping[int, float], planned: int) -> str:
    """``"88.12 ± 1.03"`` (×100) from per-seed values, ``(n=k)`` when fewer than ``planned`` seeds."""
    if not values:
        return MISSING
    mean, std = summarise_seeds(list(values.values()))
    text = format_mean_std(100 * mean, 100 * std if len(values) > 1 else float("nan"))
    return text if len(values) >= planned else f"{text} (n={len(values)})"


def _table_seeds(results: Mapping[str, Any], table: str) -> list[int]:
    seeds = results["seeds"]
    return list(seeds) if table in ALL_SEED_TABLES else list(seeds[:1])


def table_progress(results: Mapping[str, Any], table: str) -> tuple[int, int]:
    """Finished and planned runs behind one table (Tables 2–3 count the full model's first seed)."""
    done = expected = 0
    seeds = _table_seeds(results, table)
    n_tasks = len(results["tasks"])
    for name in TABLE_ROWS[table]:
        per_seed = results["methods"].get(name, {}).get("per_seed", {})
        expected += len(seeds) * (n_tasks if METHOD_BY_NAME[name].single_task else 1)
        done += sum(len(per_seed.get(str(seed), {}).get("runs", {})) for seed in seeds)
    return done, expected


def header(results: Mapping[str, Any], table: str) -> str:
    """Title, provenance, settings and completeness of one table."""
    h = results["header"]
    seeds = _table_seeds(results, table)
    done, expected = table_progress(results, table)
    status = (f"complete: all {expected} runs finished" if done == expected
              else f"**partial: {done} of {expected} runs finished** — cells marked (n=k) or n/a lack runs")
    seed_text = (f"seeds {', '.join(map(str, seeds))}, mean ± std over seeds" if len(seeds) > 1
                 else f"one seed ({seeds[0]})" + (", as in the paper" if table in ("table2", "table3", "feat2", "feat3")
                                                  else ""))
    lines = [
        f"# {TITLES[table]}",
        "",
        (f"- Profile `{h.get('profile')}`: {h.get('resolution')}×{h.get('resolution')}, **epochs: {h.get('epochs')}**, "
        f"batch {h.get('batch_size')}, Adam lr {h.get('lr')}; {seed_text}."),
        f"- Status: {status}.",
        f"- Command: `{h.get('command')}`",
        (f"- Runs trained at commit {', '.join(h.get('runs_trained_at') or ['–'])} on "
        f"{'; '.join(h.get('runs_trained_on') or ['–'])}."),
        f"- Written {h.get('written')} by `{h.get('invocation')}` at commit {h.get('commit')}.",
        "- Every number below is read from `results.json` in this folder.",
        "",
    ]
    return "\n".join(lines)


def _task_label(task: str) -> str:
    return f"{task} ({PAPER_DATASETS[task]})" if task in PAPER_DATASETS else task


def wide_table(results: Mapping[str, Any], table: str, metrics: Sequence[str], *, with_paper: bool) -> str:
    """Methods × (task, metric) blocks, split in two halves like the paper's tables."""
    tasks = [*results["tasks"], MEAN]
    seeds = _table_seeds(results, table)
    labels = ROW_LABELS.get(table, {})
    rows: list[dict[str, str]] = []
    for name in TABLE_ROWS[table]:
        entry = results["methods"].get(name)
        row = {"method": labels.get(name, entry["label"] if entry else name)}
        for task in tasks:
            for metric in metrics:
                values = seed_values(entry["per_seed"], task, metric, seeds) if entry else {}
                row[f"{task}:{metric}"] = cell(values, len(seeds))
        rows.append(row)
    if with_paper:
        for name, numbers in PAPER.get(table, {}).items():
            row = {"method": f"*paper: {_paper_label(table, name)}*"}
            for task in tasks:
                for metric, value in zip(PAPER_METRICS, numbers.get(task, ()), strict=False):
                    row[f"{task}:{metric}"] = f"*{value:.2f}*"
            rows.append(row)
    half = (len(tasks) + 1) // 2
    blocks = []
    for part in (tasks[:half], tasks[half:]):
        columns = [("method", "Method", "")]
        columns += [(f"{t}:{m}", f"{_task_label(t)} {HEADERS[m]}", "") for t in part for m in metrics]
        blocks.append(markdown_table(rows, columns))
    return "\n".join(blocks)


def _paper_label(table: str, name: str) -> str:
    if table == "table1":
        return {"ae": "AE", "memae": "MemAE", FULL_MODEL: "Ours"}[name]
    return ROW_LABELS.get(table, {}).get(name) or f"K = {name[1:]}"


def universal_vs_single(results: Mapping[str, Any], table: str) -> str:
    """Per task AUROC of the table's single-task rows (:data:`SINGLE_VS_UNIVERSAL`), the universal AE
    and ours, with Δs paired by seed: universal AE − the first single row, ours − the second."""
    methods = results["methods"]
    seeds = _table_seeds(results, table)
    singles = SINGLE_VS_UNIVERSAL[table]
    pairs = (("universal_ae", singles[0], f"Δ AUC universal AE − {_short(results, singles[0])}"),
             (FULL_MODEL, singles[1], f"Δ AUC ours − {_short(results, singles[1])}"))
    rows = []
    for task in [*results["tasks"], MEAN]:
        row = {"task": task}
        for name in (*singles, "universal_ae", FULL_MODEL):
            entry = methods.get(name)
            row[name] = cell(seed_values(entry["per_seed"], task, "auroc", seeds) if entry else {}, len(seeds))
        for a, b, key in pairs:
            if a in methods and b in methods:
                va = seed_values(methods[a]["per_seed"], task, "auroc", seeds)
                vb = seed_values(methods[b]["per_seed"], task, "auroc", seeds)
                row[key] = cell({s: va[s] - vb[s] for s in va.keys() & vb.keys()}, len(seeds))
        rows.append(row)
    columns = [("task", "Task", ""), *((name, _short(results, name), "") for name in singles),
               ("universal_ae", "AE universal", ""), (FULL_MODEL, "Ours", "")]
    columns += [(key, key, "") for *_, key in pairs]
    return markdown_table(rows, columns)


def paired_delta(results: Mapping[str, Any], table: str) -> str:
    """Per task AUROC of ours and the peer of :data:`AGAINST` and their difference, paired by seed."""
    ours, peer = AGAINST[table]
    methods = results["methods"]
    seeds = _table_seeds(results, table)
    key = f"Δ AUC {_short(results, ours)} − {_short(results, peer)}"
    rows = []
    for task in [*results["tasks"], MEAN]:
        values = {name: seed_values(methods[name]["per_seed"], task, "auroc", seeds) if name in methods else {}
                  for name in (ours, peer)}
        row = {"task": task, **{name: cell(v, len(seeds)) for name, v in values.items()}}
        common = values[ours].keys() & values[peer].keys()
        row[key] = cell({s: values[ours][s] - values[peer][s] for s in common}, len(seeds))
        rows.append(row)
    columns = [("task", "Task", ""), (ours, _short(results, ours), ""), (peer, _short(results, peer), ""),
               (key, key, "")]
    return markdown_table(rows, columns)


def _short(results: Mapping[str, Any], name: str) -> str:
    """A method's label without its details: ``"AE-U, single-task (HQ decoder)"`` → ``"AE-U single-task"``."""
    label = results["methods"].get(name, {}).get("label") or METHOD_BY_NAME[name].label
    return label.split(" (")[0].replace(",", "")


def render_table(results: Mapping[str, Any], table: str) -> str:
    """The whole Markdown file of one table."""
    parts = [header(results, table),
             "## Paper protocol: AUROC, F1 and ACC at the best-F1 threshold on the test labels\n",
             wide_table(results, table, PAPER_METRICS, with_paper=True)]
    if table in SINGLE_VS_UNIVERSAL:
        parts += ["\n## Universal vs single-task (AUROC; Δ paired by seed)\n", universal_vs_single(results, table)]
    if table in AGAINST:
        parts += ["\n## Against the peer (AUROC; Δ paired by seed)\n", paired_delta(results, table)]
    parts += ["\n## Deployable view: AP, and F1/ACC at the threshold fitted on validation normals\n",
              wide_table(results, table, DEPLOYABLE_METRICS, with_paper=False)]
    parts += [
        "\n## Notes\n",
        f"- {TEST_PEEKING_NOTE}",
        f"- {VALIDATION_NOTE}",
        f"- *Italic rows are the paper's published numbers, not ours.* {PAPER_DATA_NOTE}",
        ("- fundus scores exclude glaucoma images from other sources than the normals (source confound); "
        "`results.json` also has every task's `dedup` view (test images byte-identical to a training "
        "image removed) and, for fundus, `all_sources`."),
    ]
    if table in FEATURE_NOTES:
        parts += [f"- {note}" for note in FEATURE_NOTES[table]]
    else:
        parts.append("- Single-task baselines train for the same number of epochs on their task's normals only, so "
                     "small tasks (breast_us, head_ct: ~90 images) get ~1 optimisation step per epoch.")
    if table == "table4":
        parts.append("- *Steps of a universal run*: each single-task run trains for ⌈E·S_all / S_task⌉ epochs "
                     "(E: the profile's epochs, S: optimisation steps per epoch — full batches — on all tasks' "
                     "and on its task's training normals), i.e. as many steps as one run on all tasks; its "
                     "epochs are in `results.json` (`per_seed.<seed>.runs.<task>.epochs`). Not in the paper: "
                     "it asks whether the universal models win by sharing data or by taking more steps.")
    return "\n".join(parts) + "\n"
