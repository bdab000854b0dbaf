#!/usr/bin/env python
"""Which image descriptor and which distance tell the tasks apart, and tell medical images from others?

``python benchmarks/trust_design.py RUN [--out benchmarks/results/trust-design.md]`` loads a trained
run's manifests (e.g. ``benchmarks/results/cpu-feat/runs/feature_moe/seed0/all``) and, for each
candidate *scope* descriptor and distance, fits per-task references on the **training** normals and
measures on the **validation** normals only (the test split is not loaded):

- task identification: share of validation normals whose nearest task (distance divided by that
  task's median validation distance) is their own task;
- in-scope flagged: share of validation normals whose distance to their own task exceeds that
  task's 99th percentile of validation distances (leave-one-out, so it is an honest estimate);
- out-of-scope caught: natural images (scikit-image's ``data`` images) and, leave-one-task-out,
  each task's validation normals against references of the other four tasks: share flagged (no task
  within its threshold).

Descriptors: ``thumb`` (the model input area-pooled to 16 × 16, 256 values), ``trunk`` (the frozen
EfficientNet-Lite0 feature map at the run's resolution, spatial mean, 152 values), ``trunk_ms``
(spatial mean and standard deviation, 304), the two stages of ``trunk_ms`` alone: ``early_ms``
(the first stage's channels: textures and intensities) and ``late_ms`` (the last stage's), and
``trunk_q`` (per channel the spatial median and interquartile range: robust statistics, which a lesion
covering a minority of the image moves less than the mean and standard deviation). Distances:
``knn`` (Euclidean to the nearest training normal) and ``maha`` (Mahalanobis to the task's mean with
a Ledoit–Wolf covariance). ``patch``: every location's trunk feature against one Gaussian of the
task's training locations (pooled over positions), the image's distance the median, lower quartile
or mean of its locations' distances (a lesion moves only its own locations). ``hist``: the model
input's 32-bin intensity histogram, alone and appended to ``trunk_q`` (``trunk_q_hist``).
``maha_trim20`` / ``maha_median``: the Mahalanobis distance summed robustly over the whitened
components (without the largest 20 %, or their median × F). ``maha_lesion``: Mahalanobis with each
task's references extended by copies of its training normals with synthetic lesions of 1–20 % of the
image (another seed than the validation lesions), so the covariance holds the directions a lesion
moves the descriptor in and a lesion costs less distance than a change of modality.

``deep_q`` (the trunk's last group, 320 channels at 1/32 of the input, per channel the spatial median
and interquartile range: ImageNet's most semantic map, which the model itself does not read; run from
the model's prepared features, see ``deep``), ``embed`` (the trunk's 1,280-channel head, spatially
averaged: the ImageNet image embedding) and ``trunk_deep_q`` (``trunk_q`` and ``deep_q`` side by side).
``maha_lesion_shift``: ``maha_lesion`` with a further copy of every training normal under an
acquisition change (:func:`medmoe.data.acquisition.acquisition_shift`, another seed than the
validation copies below): the product's references (:func:`medmoe.engine.trust_fitting.reference_copies`).

``acquisition shift``: every validation normal under a random change of the kind another scanner or
site makes (:func:`medmoe.data.acquisition.acquisition_shift`: gamma, contrast, offset, blur,
noise, zoom and shift); such images are in scope, so the share flagged should stay small.
It is a proxy: a real site change (the chest X-ray test normals) may differ in kinds the proxy lacks.

``synthetic anomalies``: lesions pasted into validation normals (:func:`medmoe.data.anomalies.
synthesize_anomalies`, 1–6 % of the image, and large ones, 6–20 %) are in scope: the share flagged as
out of scope (far from every task) should stay small.

``margin for 95 % LOTO``: how far every task's limit could be raised (× its 99th percentile) while
95 % of the left-out task's validation images are still flagged — pooled over left-out tasks, and for
the worst one. The larger, the more room to keep in-scope images that differ from the validation
normals (lesions, another scanner) in scope.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # noqa: E402


def natural_images() -> list:  # noqa: ANN201 - list of float arrays in [0, 1]
    """scikit-image's bundled example images (photos, text, microscopy; not its two retinal images,
    which are fundus photographs and in scope) and three synthetic ones, as ``(name, image)``."""
    import numpy as np
    from skimage import data

    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "text", "page", "moon", "horse", "clock",
             "coins", "hubble_deep_field", "immunohistochemistry", "motorcycle_left", "logo", "grass",
             "gravel", "brick", "colorwheel", "cat", "checkerboard"]
    images = []
    for name in names:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - some images need pooch downloads; skip them offline
            continue
        image = image.astype(np.float32)
        image = image[..., :3] if image.ndim == 3 else image
        images.append((name, image / max(float(image.max()), 1.0)))
    rng = np.random.default_rng(0)
    images += [("noise", rng.random((256, 256)).astype(np.float32)),
               ("gradient", np.tile(np.linspace(0, 1, 256, dtype=np.float32), (256, 1))),
               ("blank", np.full((256, 256), 0.5, np.float32))]
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--descriptors", nargs="*", help="measure only these descriptors (default: all)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from sklearn.covariance import LedoitWolf

    from medmoe.data.acquisition import acquisition_shift
    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.data.dataset import ImageDataset
    from medmoe.data.transforms import preprocess_image
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.data import default_cache_dir, run_manifests
    from medmoe.engine.features import prepared_inputs
    from medmoe.engine.trust_fitting import SCOPE_ACQUISITION_SEED, lesion_copies
    from medmoe.report.tables import markdown_table

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.run)
    tasks, config = checkpoint.tasks, checkpoint.config.model
    manifests = run_manifests(args.run)
    prep = checkpoint.model  # a feature model: its prepare() is the frozen trunk
    net = prep.trunk.net
    early = net.group_channels[prep.trunk.stages[0]]  # channels: the stages, in order

    @torch.no_grad()
    def deep(feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``deep_q`` and ``embed`` from the model's prepared trunk features ``(B, D, R/8, R/8)``: its
        last stage (group 4, stored upsampled ×2) average-pooled back to its own grid and run through
        the trunk's remaining groups (5, 6) and its head, so the cached features are all it needs."""
        quantiles, embeddings = [], []
        deeper = net._blocks[net.group_ends[prep.trunk.stages[-1]] + 1:]
        for batch in feats.split(256):
            last = torch.nn.functional.avg_pool2d(batch[:, early:], 2)
            for block in deeper:
                last = block(last)  # -> (b, 320, R/32, R/32)
            embeddings.append(torch.nn.functional.relu6(net._bn1(net._conv_head(last))).mean(dim=(2, 3)))
            q25, median, q75 = torch.quantile(last.flatten(2), torch.tensor([0.25, 0.5, 0.75]), dim=2)
            quantiles.append(torch.cat([median, q75 - q25], 1))
        return torch.cat(quantiles).numpy(), torch.cat(embeddings).numpy()

    def describe(images: torch.Tensor) -> dict[str, np.ndarray]:
        feats = prepared_inputs(prep, images, cache_dir=default_cache_dir(), progress=False)
        deep_q, embed = deep(feats)
        thumb = torch.nn.functional.adaptive_avg_pool2d(images.mean(dim=1, keepdim=True), 16).flatten(1)
        mean, std = feats.mean(dim=(2, 3)), feats.std(dim=(2, 3))
        q25, median, q75 = torch.quantile(feats.flatten(2), torch.tensor([0.25, 0.5, 0.75]), dim=2)
        trunk_q = torch.cat([median, q75 - q25], 1).numpy()
        gray = images.mean(dim=1).flatten(1).clamp(0, 1)
        hist = torch.stack([torch.histc(g, bins=32, min=0, max=1) for g in gray]).numpy() / gray.shape[1]
        return {"thumb": thumb.numpy(), "trunk": mean.numpy(), "trunk_ms": torch.cat([mean, std], 1).numpy(),
                "early_ms": torch.cat([mean[:, :early], std[:, :early]], 1).numpy(),
                "late_ms": torch.cat([mean[:, early:], std[:, early:]], 1).numpy(),
                "trunk_q": trunk_q,
                "patch": feats.flatten(2).transpose(1, 2).numpy(),  # (B, h·w, D): every location
                "hist": hist, "trunk_q_hist": np.concatenate([trunk_q, hist], 1),
                "deep_q": deep_q, "embed": embed,
                "trunk_deep_q": np.concatenate([trunk_q, deep_q], 1)}

    def split_images(split: str, task: str) -> torch.Tensor:
        entries = [(m, s) for m in manifests for s in m.select(split=split, task=task)
                   if "other_source" not in s.flags]
        return ImageDataset(entries, tasks, resolution=config.resolution, cache_dir=default_cache_dir(),
                            with_masks=False).materialize(progress=False).images

    train_images = {t.id: split_images("train", t.id) for t in tasks}
    train = {t: describe(images) for t, images in train_images.items()}
    val_images = {t.id: split_images("val", t.id) for t in tasks}
    val = {t: describe(images) for t, images in val_images.items()}
    lesions = {size: {t: describe(torch.from_numpy(synthesize_anomalies(images.numpy(), np.random.default_rng(0),
                                                                        area=area)[0]))
                      for t, images in val_images.items()}
               for size, area in (("small", (0.01, 0.06)), ("large", (0.06, 0.2)))}
    # lesion-tolerant references (``maha_lesion``): the product's lesion copies of the *training* normals
    # (1-20 % of the image, another seed than the validation lesions above), task by task
    train_lesions = {t: describe(lesion_copies(images, torch.zeros(len(images), dtype=torch.long)))
                     for t, images in train_images.items()}

    def shifted_copies(images: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
        return describe(torch.from_numpy(acquisition_shift(images.numpy(), np.random.default_rng(seed))))

    train_shift = {t: shifted_copies(images, SCOPE_ACQUISITION_SEED) for t, images in train_images.items()}
    shifted = {t: shifted_copies(images, 0) for t, images in val_images.items()}
    natural = describe(torch.from_numpy(np.stack([preprocess_image(im, config.in_channels, config.resolution)
                                                  for _, im in natural_images()])))

    summaries = {"median": lambda d2: np.median(d2, axis=1), "q25": lambda d2: np.quantile(d2, 0.25, axis=1),
                 "mean": lambda d2: d2.mean(axis=1)}

    def patch_distance(refs: np.ndarray, summary):  # noqa: ANN001, ANN202
        """Mahalanobis of every location to the task's training locations (pooled over positions, a
        random 40,000 of them fitted), summarised per image over its locations."""
        pooled = refs.reshape(-1, refs.shape[-1])
        pooled = pooled[np.random.default_rng(0).permutation(len(pooled))[:40_000]]
        lw = LedoitWolf().fit(pooled)
        mean, precision = lw.location_, lw.precision_

        def distance(q: np.ndarray) -> np.ndarray:
            delta = q - mean  # (B, L, D)
            d2 = np.einsum("bld,de,ble->bl", delta, precision, delta)
            return np.sqrt(np.maximum(summary(d2), 0))
        return distance

    def whitened_distance(lw, kind: str):  # noqa: ANN001, ANN202
        """Mahalanobis distance from the squared whitened components (covariance eigenbasis) of the
        difference, robustly summed: without the largest 20 % (``maha_trim20``) or their median × F
        (``maha_median``): a lesion that moves a few components moves it less than a change of
        modality that moves all of them."""
        values, vectors = np.linalg.eigh(lw.covariance_)
        project = vectors / np.sqrt(np.maximum(values, 1e-12))

        def distance(q: np.ndarray) -> np.ndarray:
            parts = np.sort(((q - lw.location_) @ project) ** 2, axis=1)  # (B, F), ascending
            f = parts.shape[1]
            total = parts[:, :int(0.8 * f)].sum(1) / 0.8 if kind == "maha_trim20" else np.median(parts, 1) * f
            return np.sqrt(total)
        return distance

    rows = []
    variants = [(d, m) for d in ("thumb", "trunk", "trunk_ms", "early_ms", "late_ms", "trunk_q", "hist", "trunk_q_hist")
                for m in ("knn", "maha")] + [("patch", "median"), ("patch", "q25"), ("patch", "mean")] + [
        (d, m) for d in ("trunk_ms", "trunk_q") for m in ("maha_trim20", "maha_median")] + [
        ("trunk_q", "maha_lesion"), ("trunk_ms", "maha_lesion")] + [
        (d, m) for d in ("deep_q", "embed", "trunk_deep_q") for m in ("maha", "maha_lesion")] + [
        (d, "maha_lesion_shift") for d in ("trunk_q", "deep_q", "trunk_deep_q")]
    for descriptor, distance in variants:
        if args.descriptors and descriptor not in args.descriptors:
            continue
        def fit(task: str):  # noqa: ANN202
            refs = train[task][descriptor]
            if distance.startswith("maha_lesion"):
                refs = np.concatenate([refs, train_lesions[task][descriptor]])
            if distance == "maha_lesion_shift":
                refs = np.concatenate([refs, train_shift[task][descriptor]])
            if descriptor == "patch":
                return patch_distance(refs, summaries[distance])
            if distance == "knn":
                return lambda q, r=refs: np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1)).min(1)
            lw = LedoitWolf().fit(refs)
            if distance in ("maha_trim20", "maha_median"):
                return whitened_distance(lw, distance)
            return lambda q, lw=lw: np.sqrt(np.maximum(lw.mahalanobis(q), 0))

        dist_fn = {t: fit(t) for t in train}
        val_d = {t: {u: dist_fn[u](val[t][descriptor]) for u in train} for t in train}
        scale = {t: float(np.median(val_d[t][t])) for t in train}
        limit = {}
        for t in train:  # leave-one-out 99th percentile
            own = val_d[t][t]
            limit[t] = float(np.quantile(own, 0.99))
        loo_flag, loo_task = [], {}
        for t in train:
            own = val_d[t][t]
            flags = [own[i] > np.quantile(np.delete(own, i), 0.99) for i in range(len(own))]
            loo_flag += flags
            loo_task[t] = 100 * float(np.mean(flags))
        ident = [np.mean(np.argmin(np.stack([val_d[t][u] / scale[u] for u in train]), 0)
                         == list(train).index(t)) for t in train]
        nat_flag = np.all(np.stack([dist_fn[u](natural[descriptor]) > limit[u] for u in train]), 0)
        loto, ratios = [], {}
        for t in train:
            others = [u for u in train if u != t]
            loto.append(np.mean(np.all(np.stack([val_d[t][u] > limit[u] for u in others]), 0)))
            ratios[t] = np.min(np.stack([val_d[t][u] / limit[u] for u in others]), 0)  # > 1: flagged
        margin = {t: float(np.quantile(r, 0.05)) for t, r in ratios.items()}
        lesion_flag = {size: 100 * np.mean(np.concatenate([
            np.all(np.stack([dist_fn[u](by_task[t][descriptor]) > limit[u] for u in train]), 0)
            for t in train])) for size, by_task in lesions.items()}
        shift_task = {t: 100 * float(np.mean(np.all(np.stack([dist_fn[u](shifted[t][descriptor]) > limit[u]
                                                              for u in train]), 0))) for t in train}
        pooled_margin = float(np.quantile(np.concatenate(list(ratios.values())), 0.05))
        rows.append({"descriptor": descriptor, "distance": distance,
                     "ident": f"{100 * np.mean(ident):.1f}",
                     "ident_min": f"{100 * np.min(ident):.1f} ({list(train)[int(np.argmin(ident))]})",
                     "in_scope": f"{100 * np.mean(loo_flag):.1f}",
                     "in_scope_max": f"{max(loo_task.values()):.1f} ({max(loo_task, key=loo_task.get)})",
                     "natural": f"{100 * nat_flag.mean():.1f}",
                     "loto": f"{100 * np.mean(loto):.1f}",
                     "loto_min": f"{100 * np.min(loto):.1f} ({list(train)[int(np.argmin(loto))]})",
                     "lesion_small": f"{lesion_flag['small']:.1f}",
                     "lesion_large": f"{lesion_flag['large']:.1f}",
                     "shift": f"{np.mean(list(shift_task.values())):.1f}",
                     "shift_max": f"{max(shift_task.values()):.1f} ({max(shift_task, key=shift_task.get)})",
                     "margin": f"{pooled_margin:.2f}",
                     "margin_min": f"{min(margin.values()):.2f} ({min(margin, key=margin.get)})"})
        print(rows[-1], flush=True)
    table = markdown_table(rows, [("descriptor", "Descriptor", ""), ("distance", "Distance", ""),
                                  ("ident", "task identified, mean over tasks (%)", ""),
                                  ("ident_min", "worst task (%)", ""),
                                  ("in_scope", "in-scope val normals flagged, LOO (%)", ""),
                                  ("in_scope_max", "worst task (%)", ""),
                                  ("natural", f"natural images flagged ({len(natural['thumb'])}) (%)", ""),
                                  ("loto", "left-out task flagged, mean (%)", ""),
                                  ("loto_min", "worst left-out task (%)", ""),
                                  ("lesion_small", "synthetic lesions 1–6 % flagged (%)", ""),
                                  ("lesion_large", "synthetic lesions 6–20 % flagged (%)", ""),
                                  ("shift", "acquisition shift flagged, mean over tasks (%)", ""),
                                  ("shift_max", "worst task (%)", ""),
                                  ("margin", "margin for 95 % LOTO, pooled (×)", ""),
                                  ("margin_min", "worst left-out task (×)", "")])
    text = (f"# Scope descriptor design (validation data only)\n\nRun `{args.run}` (resolution "
            f"{config.resolution}); references: each task's training normals; measured on validation normals "
            f"and {len(natural['thumb'])} natural/synthetic images. Written by "
            f"`python benchmarks/trust_design.py {args.run}`.\n\n{table}\n")
    return emit(text, args.out)


if __name__ == "__main__":
    sys.exit(main())
