#!/usr/bin/env python
"""Which acquisition changes push a normal scan out of scope, and do reference copies of one kind help
against another? Decided on validation data.

``python benchmarks/trust_shift.py RUN [--out benchmarks/results/trust-shift.md]`` fits the product's
scope head (:func:`medmoe.engine.trust_fitting.fit_scope`) on a trained run's training normals with four
sets of reference copies — lesion copies only (the head before acquisition copies), lesion copies and
acquisition copies of every kind (the product, :func:`medmoe.engine.trust_fitting.reference_copies`), and
lesion copies with acquisition copies of the photometric or the geometric kinds only — calibrates the
scope limit on the validation normals as training does, and reports the share of validation normals
flagged out of scope under each single kind of change
(:func:`medmoe.data.acquisition.acquisition_shift`, seed 0; the references' copies use another seed).
A column whose kind the references did not see measures whether the tolerance carries over. The test
split is not loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402

PHOTOMETRIC = ("gamma", "contrast", "offset", "blur", "noise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from medmoe.data.acquisition import ACQUISITION_KINDS, acquisition_shift
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.data import default_cache_dir, load_split, run_manifests
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.trust_fitting import SCOPE_ACQUISITION_SEED, fit_scope, lesion_copies, scope_distances
    from medmoe.report.tables import markdown_table
    from medmoe.trust.calibration import fit_calibration

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.run)
    model, config, ids = checkpoint.model, checkpoint.config, checkpoint.tasks.ids
    manifests, cache = run_manifests(args.run), default_cache_dir()
    train = load_split(manifests, checkpoint.tasks, "train", config, cache, False)
    val = load_split(manifests, checkpoint.tasks, "val", config, cache, False)

    def prepared(images: torch.Tensor | np.ndarray, cached: bool = False) -> torch.Tensor:
        images = torch.as_tensor(images)
        return prepared_inputs(model, images, cache_dir=cache if cached else None, progress=False)

    train_x, val_x = prepared(train.images, cached=True), prepared(val.images, cached=True)
    lesions = prepared(lesion_copies(train.images, train.task_indices))

    def shifted(images: torch.Tensor, kinds: tuple[str, ...], seed: int) -> torch.Tensor:
        return prepared(acquisition_shift(images.numpy(), np.random.default_rng(seed), kinds))

    references = {
        "lesion copies (before)": lesions,
        "lesion + acquisition copies, all kinds (product)":
            torch.cat([lesions, shifted(train.images, ACQUISITION_KINDS, SCOPE_ACQUISITION_SEED)]),
        "lesion + photometric copies only": torch.cat([lesions, shifted(train.images, PHOTOMETRIC,
                                                                        SCOPE_ACQUISITION_SEED)]),
        "lesion + geometric copies only": torch.cat([lesions, shifted(train.images, ("geometry",),
                                                                      SCOPE_ACQUISITION_SEED)]),
    }
    columns = [(kind,) for kind in ACQUISITION_KINDS] + [ACQUISITION_KINDS]
    probes = {kinds: shifted(val.images, kinds, 0) for kinds in columns}
    rows = []
    for name, copies in references.items():
        head = fit_scope(model, config.model, train_x, train.task_indices, len(ids), copy_inputs=copies)
        calibration = fit_calibration(ids, np.zeros(len(val_x)), val.task_indices.numpy(),
                                      scope_distances(model, config.model, head, val_x), "validation normals")
        row = {"references": name, "limit": f"{calibration.scope_limit:.2f}"}
        for kinds, x in probes.items():
            nearest = calibration.normalised(ids, scope_distances(model, config.model, head, x)).min(1)
            flagged = nearest > calibration.scope_limit
            by_task = [100 * float(flagged[val.task_indices.numpy() == t].mean()) for t in range(len(ids))]
            worst = int(np.argmax(by_task))
            key = "all" if len(kinds) > 1 else kinds[0]
            row[key] = f"{100 * flagged.mean():.1f} ({ids[worst]} {by_task[worst]:.0f})"
        rows.append(row)
        print(row, flush=True)
    spec = [("references", "Scope references (training normals +)", ""), ("limit", "scope limit", "")] + [
        (kind, f"{kind} flagged % (worst task %)", "") for kind in ACQUISITION_KINDS] + [
        ("all", "all kinds at once flagged % (worst task %)", "")]
    text = (f"# Acquisition changes and the scope (validation data only)\n\nRun `{args.run}`; "
            f"{len(val_x)} validation normals, each changed once per column (seed 0), flagged out of scope "
            f"by the product rule (limit: the 99th percentile of the unchanged validation normals' normalised "
            f"distances). Written by `python benchmarks/trust_shift.py {args.run}`.\n\n"
            f"{markdown_table(rows, spec)}\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
