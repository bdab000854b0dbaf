"""What the training-free memory studies share: the ``cpu-feat`` profile's trunk, the data split as training
splits it, and each split's images and trunk features per task."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def parse_arguments(description: str | None, argv: list[str] | None) -> argparse.Namespace:
    """A study's command line: ``--data``, ``--seed``, ``--threads``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[], help="data root or manifests (default: $MEDMOE_DATA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


@dataclass
class TrunkData:
    """The profile's config, the manifests and tasks, the (untrained) model whose trunk reads the images."""

    config: Any
    manifests: Sequence[Any]
    tasks: Any
    model: Any
    cache: Any

    @classmethod
    def open(cls, args: argparse.Namespace) -> TrunkData:
        """From :func:`parse_arguments`' values (sets torch's threads)."""
        from medmoe.engine.config import DataConfig, load_config
        from medmoe.engine.data import default_cache_dir, resolve_data, select_tasks
        from medmoe.model.registry import create_model
        from medmoe.tasks import default_registry

        torch.set_num_threads(args.threads)
        config = load_config("cpu-feat")
        manifests = resolve_data(args.data, seed=args.seed, val_fraction=DataConfig().val_fraction)
        return cls(config, manifests, select_tasks(default_registry(), manifests), create_model(config.model),
                   default_cache_dir())

    def images(self, split: str, task: str, *, excluded: Sequence[str] = ()) -> tuple[torch.Tensor, np.ndarray]:
        """Images ``(n, 1, R, R)`` of a split and task, without rows flagged ``excluded``, and their labels."""
        from medmoe.data.dataset import ImageDataset

        samples = [(m, s) for m in self.manifests for s in m.select(split=split, task=task, exclude_flags=excluded)]
        batch = ImageDataset(samples, self.tasks, resolution=self.config.model.resolution, cache_dir=self.cache,
                             with_masks=False).materialize(progress=False)
        return batch.images, np.array([s.label for _, s in samples])

    def features(self, images: torch.Tensor, *, cached: bool = True) -> torch.Tensor:
        """Prepared trunk features ``(n, D, h, w)`` (cached unless the images are made up here)."""
        from medmoe.engine.features import prepared_inputs

        return prepared_inputs(self.model, images, cache_dir=self.cache if cached else None, progress=False)
