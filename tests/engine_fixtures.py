"""Shared helpers for engine tests: a small synthetic dataset and fast model settings."""

from __future__ import annotations

from pathlib import Path

from medmoe.data.manifest import Manifest
from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.engine.config import RunConfig, load_config

#: A model small enough to train in seconds on one CPU thread.
FAST = ("model.resolution=32", "model.fc_width=128", "train.batch_size=16", "train.lr=1e-3")


def synthetic(root: Path, n_train: int = 12, n_test: int = 4, **kw) -> Manifest:
    """A tiny synthetic dataset of the five tasks at 64×64."""
    return write_synthetic_dataset(root, n_train=n_train, n_test_normal=n_test, n_test_abnormal=n_test,
                                   size=64, seed=0, **kw)


def fast_config(tmp: Path, *overrides: str) -> RunConfig:
    """The fast settings plus ``overrides``; the image cache lives under ``tmp``."""
    return load_config(None, [*FAST, f"data.cache_dir={tmp / 'cache'}", *overrides])
