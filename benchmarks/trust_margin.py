#!/usr/bin/env python
"""How far above the scope limit must an image be to call it out of scope? Decided on validation data.

``python benchmarks/trust_margin.py`` (on ``benchmarks/results/cpu-feat/runs/feature_moe/seed0/all``)
fits the scope head on the training normals and the limit on the validation normals, then reports,
for margins 1–3 × the limit: synthetic anomalies made from the validation normals flagged (they are
in scope), natural images flagged, and leave-one-task-out validation normals flagged (out of scope).
Results: ``benchmarks/results/trust-margin.txt``. The test split is not loaded.
"""
import sys

sys.path.insert(0, "benchmarks")
from pathlib import Path

import numpy as np
import torch
from trust_design import natural_images

from medmoe.data.anomalies import synthesize_anomalies
from medmoe.data.transforms import preprocess_image
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.engine.data import default_cache_dir, load_split, run_manifests
from medmoe.engine.features import prepared_inputs
from medmoe.engine.trust_fitting import fit_scope, reference_copy_inputs, scope_distances, selected_copies
from medmoe.trust.calibration import fit_calibration

torch.set_num_threads(1)
run = Path("benchmarks/results/cpu-feat/runs/feature_moe/seed0/all")
ck = load_checkpoint(run); model, config, tasks = ck.model, ck.config, ck.tasks; ids = tasks.ids
ms = run_manifests(run); cache = default_cache_dir()
tr = load_split(ms, tasks, "train", config, cache, False); va = load_split(ms, tasks, "val", config, cache, False)
trx = prepared_inputs(model, tr.images, cache_dir=cache, progress=False); vax = prepared_inputs(model, va.images, cache_dir=cache, progress=False)
trl = reference_copy_inputs(model, tr.images, tr.task_indices)  # the scope head's reference copies, as training fits them
syn, _ = synthesize_anomalies(va.images.numpy(), np.random.default_rng(0))
synx = prepared_inputs(model, torch.from_numpy(syn), cache_dir=None, progress=False)
big, _ = synthesize_anomalies(va.images.numpy(), np.random.default_rng(0), area=(0.06, 0.2))
bigx = prepared_inputs(model, torch.from_numpy(big), cache_dir=None, progress=False)
nat = torch.from_numpy(np.stack([preprocess_image(im, 1, config.model.resolution) for _, im in natural_images()]))
natx = prepared_inputs(model, nat, cache_dir=None, progress=False)
trt, vat = tr.task_indices.numpy(), va.task_indices.numpy()
# full model: synthetic anomalies ratio
head = fit_scope(model, config.model, trx, tr.task_indices, len(ids), copy_inputs=trl)
cal = fit_calibration(ids, np.zeros(len(vat)), vat, scope_distances(model, config.model, head, vax), "val")
r_syn = cal.normalised(ids, scope_distances(model, config.model, head, synx)).min(1) / cal.scope_limit
r_big = cal.normalised(ids, scope_distances(model, config.model, head, bigx)).min(1) / cal.scope_limit
r_nat = cal.normalised(ids, scope_distances(model, config.model, head, natx)).min(1) / cal.scope_limit
print("limit", cal.scope_limit)
loto = []
for t in range(len(ids)):
    keep = [u for u in range(len(ids)) if u != t]; remap = {u: i for i, u in enumerate(keep)}
    m = np.isin(trt, keep); h = fit_scope(model, config.model, trx[torch.from_numpy(m)], torch.tensor([remap[u] for u in trt[m]]), 4, copy_inputs=selected_copies(trl, m))
    vm = np.isin(vat, keep); sub = [ids[u] for u in keep]
    c = fit_calibration(sub, np.zeros(vm.sum()), np.array([remap[u] for u in vat[vm]]), scope_distances(model, config.model, h, vax[torch.from_numpy(vm)]), "val")
    r = c.normalised(sub, scope_distances(model, config.model, h, vax[torch.from_numpy(vat == t)])).min(1) / c.scope_limit
    loto.append(r); print(ids[t], "loto ratio quantiles 1/5/50%", np.quantile(r, [0.01, 0.05, 0.5]).round(2))
for margin in (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0):
    print(f"margin {margin}: syn-anomaly val flagged {100*np.mean(r_syn > margin):.1f}% (6-20 %: {100*np.mean(r_big > margin):.1f}%)  natural {100*np.mean(r_nat > margin):.1f}%  loto mean {100*np.mean([np.mean(r > margin) for r in loto]):.1f}% worst {100*min(np.mean(r > margin) for r in loto):.1f}%")
