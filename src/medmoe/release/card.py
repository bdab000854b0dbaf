"""``MODEL_CARD.md`` of a trained model, generated from its own files so it cannot drift from the weights.

The card reads the run folder (``model.json``: configuration, training facts, calibration; the weights'
memory sizes; ``manifests/``: the training data per task and where it came from) and the evaluation's
``metrics.json`` (``medmoe evaluate``: test metrics with their bootstrap intervals, the deployed decision
and its out-of-scope and mismatch rates). Every number in the card is one of theirs.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from medmoe.data.manifest import Manifest
from medmoe.data.sources import SOURCES
from medmoe.engine.checkpoint import META_NAME, WEIGHTS_NAME
from medmoe.engine.data import run_manifests
from medmoe.errors import CheckpointError, DatasetError
from medmoe.model.feature.trunk import stage_stride
from medmoe.report.tables import MISSING, interval_table, markdown_table

CARD_NAME = "MODEL_CARD.md"
CARD_METRICS = ("auroc", "ap", "f1_val", "acc_val")
"""The test metrics the card tabulates with their intervals (the FPR column follows from specificity)."""


@dataclass(frozen=True)
class CardInputs:
    """What a model card is made of.

    Attributes:
        name: the model's release name (``medmoe-universal``).
        version: its release version.
        meta: the run's ``model.json``.
        manifests: the manifests it was trained on.
        metrics: the test evaluation (``metrics.json`` of ``medmoe evaluate``).
        memory_counts: patch vectors each expert's memory holds (empty for models without memories).
        memory_dim: the length of one memory vector (0 without memories).
        reproduce: the command that makes the model from a data root.
    """

    name: str
    version: str
    meta: dict[str, Any]
    manifests: list[Manifest]
    metrics: dict[str, Any]
    memory_counts: list[int]
    memory_dim: int
    reproduce: str

    @classmethod
    def read(cls, run_dir: Path, metrics_path: Path, *, name: str, version: str, reproduce: str) -> CardInputs:
        """Read a run folder and its test evaluation.

        Raises:
            CheckpointError: the evaluation is not of the test split, or of another model; the run stores no
                manifests.
        """
        meta = json.loads((run_dir / META_NAME).read_text(encoding="utf-8"))
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if metrics.get("split") != "test":
            raise CheckpointError(f"'{metrics_path}' evaluates the {metrics.get('split')!r} split; a model card "
                                  f"reports the test split (medmoe evaluate {run_dir} --split test)")
        evaluated = metrics.get("thresholds") or {}
        if set(evaluated) != set(meta["thresholds"]) or not all(
                math.isclose(evaluated[k], v, rel_tol=1e-6) or math.isnan(v) for k, v in meta["thresholds"].items()):
            raise CheckpointError(f"'{metrics_path}' is the evaluation of another model than '{run_dir}' (its "
                                  "thresholds differ); evaluate this run")
        with safe_open(run_dir / WEIGHTS_NAME, "np") as weights:
            keys = set(weights.keys())
            counts = weights.get_tensor("memory_counts").tolist() if "memory_counts" in keys else []
            dim = weights.get_slice("memory").get_shape()[1] if "memory" in keys else 0
        try:
            manifests = run_manifests(run_dir)
        except DatasetError:
            raise CheckpointError(f"run '{run_dir}' stores no manifests/ (what it was trained on, which the card "
                                  "lists); package a run trained with 'medmoe train'") from None
        return cls(name, version, meta, manifests, metrics, [int(c) for c in counts], int(dim), reproduce)


def model_card(inputs: CardInputs) -> str:
    """The card's Markdown."""
    meta, metrics = inputs.meta, inputs.metrics
    model, info = meta["config"]["model"], meta.get("info", {})
    tasks = [t["id"] for t in meta["tasks"]]
    evaluated = metrics["tasks"]
    sections = [
        f"# Model card: {inputs.name} {inputs.version}",
        "",
        _identity(inputs),
        "",
        "## Intended use",
        "",
        ("For research on anomaly detection in medical images: screening studies, reproducing published results, "
        "and as the starting point for fine-tuning (`medmoe train --init`) or adding a task (`medmoe add-task`). "
        "**It is not a medical device and must not be used for diagnosis or for any decision about a patient.** "
        "Its decisions have only been measured on the public test sets below; a site must validate it on its own "
        "data, scanners and population before drawing any conclusion from it."),
        "",
        "## The model",
        "",
        (f"One network for {len(tasks)} tasks ({', '.join(f'`{t}`' for t in tasks)}), trained on normal images "
        f"only. Architecture `{model['architecture']}`: a frozen ImageNet `{model.get('trunk', '?')}` trunk "
        f"(stages {model.get('trunk_stages', '?')}), {model['num_experts']} experts chosen by a router that reads "
        f"the prompt (text encoder `{meta['config']['train']['text_encoder']}`), each expert with a memory of "
        f"normal patch features ({model.get('memory_distance', 'euclidean')} distance) and a hallucination head; "
        f"input {model['resolution']}×{model['resolution']} px, "
        + ("3 channels (colour tasks in colour, the others' images gray in all three)" if model["in_channels"] == 3
           else "1 channel(s) (colour images are converted to grey)")
        + ". Each answer carries a p-value calibrated on validation normals, a decision at a "
        "chosen false-positive rate, and two caveats: *out of scope* (the image resembles none of the tasks' "
        "normals) and *prompt mismatch* (it resembles another task than the one asked for)."),
        "",
        "## Training data",
        "",
        _training_table(inputs, tasks),
        "",
        ("Validation normals are a seeded 10 % of each task's training normals; they select nothing but the "
        "thresholds and the p-value calibration. The test split is never used to choose anything. The terms are "
        "quoted as far as they are known and have not been verified unless the table says so; the weights are "
        "derived from these data, so their terms bind any use of the weights."),
        "",
        "## Test metrics",
        "",
        _protocol(metrics),
        "",
        interval_table({t: evaluated[t] for t in tasks if t in evaluated},
                       {t: {k: tuple(v) for k, v in evaluated[t].get("ci95", {}).items()}
                        for t in tasks if t in evaluated}, CARD_METRICS),
        "",
        _mean_line(metrics),
        "",
        ("### The decision at a false-positive rate of "
        f"{_deployed_fpr(evaluated):g}, and how often the caveats fire"),
        "",
        _deployed_table(evaluated, tasks),
        "",
        ("*Decided at* is the false-positive rate the decision is made at: the one asked for, or, where a task has "
         "too few calibration normals to reach it, the smallest rate they can (each answer then says so). The "
         "FPR on test normals is what happened; in brackets its 95 % interval."),
        "",
        ("*Out of scope* is stated beside the decision, never instead of it: an abnormal image that is out of scope "
        "still gets its score and decision. It fires more often on abnormal images than on normal ones, because "
        "disease makes an image unlike the normals; read it as \"check that this image is what the task covers\"."),
        "",
        "## What the weights hold",
        "",
        _memories(inputs),
        "",
        "## Known limits and failure modes",
        "",
        *_limits(inputs, tasks),
        "",
        "## Reproduce, retrain, extend",
        "",
        (f"- Reproduce this model from a data root with the five public datasets (`MEDMOE_DATA`):\n\n"
        f"  ```\n  {inputs.reproduce}\n  ```\n\n"
        f"  It trained in {info.get('train_seconds', math.nan) / 60:.0f} min on CPU (seed {info.get('seed', '?')}, "
        f"profile `{info.get('profile', '?')}`)."),
        ("- Fine-tune from it on your own normals: `medmoe train --init "
        f"{inputs.name} --data YOUR_DATA --out RUN`."),
        (f"- Add an organ or modality from a few normal scans: `medmoe add-task --model {inputs.name} --task ID "
        "--prompt '...' --data FOLDER --out RUN`."),
        "- Evaluate any model the same way: `medmoe evaluate RUN --out metrics.json`.",
    ]
    return "\n".join(sections) + "\n"


def _identity(inputs: CardInputs) -> str:
    meta = inputs.meta
    info = meta.get("info", {})
    return "\n".join([
        f"- **Name**: {inputs.name} {inputs.version}",
        f"- **Weights**: `{WEIGHTS_NAME}`, SHA-256 `{meta['weights']['sha256']}` (checked at every load)",
        (f"- **Trained with**: medmoe {meta['medmoe_version']}, profile `{info.get('profile', '?')}`, seed "
        f"{info.get('seed', '?')}, {info.get('epochs', '?')} epochs ({info.get('selection', '?')}), made "
        f"{meta.get('created', '?')}"),
        "- **Licence**: research use only, under the terms of the training data (`LICENSE` of this package)",
    ])


def _training_table(inputs: CardInputs, tasks: list[str]) -> str:
    prompts = {t["id"]: t["prompt"] for t in inputs.meta["tasks"]}
    rows, provenance = [], []
    for task in tasks:
        samples = [s for m in inputs.manifests for s in m.samples if s.task == task]
        splits = Counter(s.split for s in samples if s.label == 0)
        rows.append({"task": task, "train": splits["train"], "val": splits["val"], "prompt": prompts.get(task, "")})
        for manifest in (m for m in inputs.manifests if task in m.tasks):
            source = SOURCES.get(manifest.meta.get("source", ""))
            described = source.description if source else manifest.meta.get("source") or "not recorded"
            provenance.append(f"- `{task}`: {described}. "
                              f"Terms: {source.terms if source else 'not recorded'}.")
    table = markdown_table(rows, [("task", "Task", ""), ("train", "Train normals", "d"),
                                  ("val", "Validation normals", "d"), ("prompt", "Prompt", "")])
    return table + "\n" + "\n".join(provenance)


def _protocol(metrics: dict[str, Any]) -> str:
    return (f"On each task's test split (medmoe {metrics.get('medmoe_version', '?')}, `medmoe evaluate`). AUROC and "
            "AP over all test images; F1 and accuracy at the threshold fitted on validation normals only (what "
            "`medmoe detect` decides at), never at a threshold chosen on the test labels. In brackets: 95 % "
            "confidence intervals, percentile bootstrap over 1,000 resamples of the test images stratified by "
            "class, the threshold fixed. The fundus test uses only the glaucoma images of the normals' own source "
            "(the others would let a detector tell sources apart, see the datasets' notes).")


def _mean_line(metrics: dict[str, Any]) -> str:
    mean = metrics.get("mean", {})
    auroc, ap, f1, acc = (100 * mean.get(k, math.nan) for k in ("auroc", "ap", "f1_val", "acc_val"))
    return (f"Mean over the tasks: AUROC {auroc:.2f}, AP {ap:.2f}, F1 {f1:.2f}, accuracy {acc:.2f} "
            "(validation threshold).")


def _deployed_fpr(evaluated: dict[str, Any]) -> float:
    return next((t["deployed"]["fpr"] for t in evaluated.values() if "deployed" in t), math.nan)


def _deployed_table(evaluated: dict[str, Any], tasks: list[str]) -> str:
    def pct(value: float | None) -> str:
        return MISSING if value is None or math.isnan(value) else f"{100 * value:.1f}"

    rows = []
    for task in tasks:
        if "deployed" not in evaluated.get(task, {}):
            continue
        d, ci = evaluated[task]["deployed"], evaluated[task].get("ci95", {}).get("specificity_val")
        fpr = pct(d["fpr_observed"]) + ("" if not ci or math.isnan(ci[0]) else
                                        f" [{100 * (1 - ci[1]):.1f}, {100 * (1 - ci[0]):.1f}]")
        rows.append({"task": task, "level": pct(d["level"]), "fpr": fpr, "sens": pct(d["sensitivity"]),
                     "oos_n": pct(d["out_of_scope_normal"]), "oos_a": pct(d["out_of_scope_abnormal"]),
                     "mm_n": pct(d["mismatch_normal"]), "mm_a": pct(d["mismatch_abnormal"]),
                     "n": f"{evaluated[task]['n_normal']} / {evaluated[task]['n_abnormal']}"})
    return markdown_table(rows, [("task", "Task", ""), ("level", "Decided at (%)", ""),
                                 ("fpr", "FPR on test normals (%)", ""), ("sens", "Sensitivity (%)", ""),
                                 ("oos_n", "Out of scope: normals (%)", ""),
                                 ("oos_a", "Out of scope: abnormals (%)", ""),
                                 ("mm_n", "Mismatch: normals (%)", ""), ("mm_a", "Mismatch: abnormals (%)", ""),
                                 ("n", "Test normal / abnormal", "")])


def _memories(inputs: CardInputs) -> str:
    model = inputs.meta["config"]["model"]
    text = ("Only the trained network, its calibration and statistics of normal features; no image, thumbnail, "
            "file name or patient data. ")
    if inputs.memory_counts:
        tasks = [t["id"] for t in inputs.meta["tasks"]]
        per_expert = ", ".join(f"{tasks[i] if i < len(tasks) else f'E{i + 1}'} {n:,}"
                               for i, n in enumerate(inputs.memory_counts))
        stride = stage_stride(min(model["trunk_stages"]))
        grid = model["resolution"] // stride
        text += (f"The memories hold {sum(inputs.memory_counts):,} feature vectors of {inputs.memory_dim} numbers "
                 f"({per_expert}): each describes one cell of the trunk's {grid}×{grid} feature grid of a training "
                 f"normal (a region of {stride}×{stride} px of the model's {model['resolution']} px input, with the "
                 "context the network sees around it), chosen by a greedy coreset across all of a "
                 "task's images, and stored without its position or the image it came from, so no image can be "
                 "reassembled from them. ")
    calibration = inputs.meta.get("trust", {})
    if calibration:
        text += ("The calibration holds each task's validation-normal anomaly scores (numbers, sorted) and the "
                 "scope head the mean and precision matrix of each task's pooled image descriptors.")
    return text


def _limits(inputs: CardInputs, tasks: list[str]) -> list[str]:
    evaluated = inputs.metrics["tasks"]
    weakest = min((t for t in tasks if t in evaluated), key=lambda t: evaluated[t]["auroc"], default=None)
    lines = [
        ("- **Other organs, modalities and views** were never seen: such images get an answer with the out-of-scope "
        "caveat, not a refusal. Use `medmoe add-task` to cover them."),
        ("- **Populations and scanners**: each task was trained on one public dataset from one or few sites; "
        "performance on other scanners, protocols, vendors and populations is unknown."),
    ]
    if "chest_xray" in tasks:
        lines.append("- **Chest X-ray** was trained on *paediatric* radiographs (Kermany, Guangzhou); adult "
                     "chest X-rays (e.g. RSNA) differ in anatomy and were not tested.")
    if weakest is not None:
        lines.append(f"- **{weakest}** is the weakest task (test AUROC {100 * evaluated[weakest]['auroc']:.1f}): "
                     "do not rely on its decisions.")
    for task in tasks:
        duplicates = evaluated.get(task, {}).get("excluded", {}).get("dup_of_train", 0)
        if duplicates:
            lines.append(f"- **{task}**: {duplicates} test images are byte-identical to training images (in the "
                         "public split); without them the test AUROC is "
                         f"{100 * evaluated[task]['dedup']['auroc']:.1f} (with them "
                         f"{100 * evaluated[task]['auroc']:.1f}).")
        if "pixel_auroc" in evaluated.get(task, {}):
            lines.append(f"- **Maps** point at the finding only roughly: on {task}'s lesion masks the pixel AUROC "
                         f"is {100 * evaluated[task]['pixel_auroc']:.1f}.")
    resolution = inputs.meta["config"]["model"]["resolution"]
    lines.append(f"- **Small findings**: images are scored at {resolution}×{resolution} px, so lesions of a few "
                 "pixels at that size can be missed and the maps are coarse.")
    lines.append("- **Burned-in annotations** (calipers, text, markers) differ between normal and abnormal images "
                 "in some public sets (BUSI) and can be scored as anomalies.")
    return lines
