"""Shared by the serve tests: one tiny trained model per test session, and phantom images to upload."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.engine.config import load_config
from medmoe.engine.train import train

#: A model small enough to train one epoch in a few seconds on one CPU thread.
TINY = ("model.resolution=32", "model.fc_width=128", "train.batch_size=16", "train.epochs=1")

_BUILT: dict[str, Path] = {}


def tiny_model(factory: pytest.TempPathFactory) -> Path:
    """The data folder of a synthetic dataset (64×64 phantoms of the five tasks) with a model trained
    on it for one epoch in ``<data>/run``; built once per session, shared by both serve test files.

    80 normals per task, so 8 per task calibrate the scope limit: with 2 or 4 (24 or 40 normals) the
    limit is the largest of a handful of ratios, and the 32-px test phantoms fell just outside it
    (1.3 × against 1.2, 1.2 × against 1.1) once the scope references held acquisition copies."""
    if "root" not in _BUILT:
        root = factory.mktemp("serve-model")
        manifest = write_synthetic_dataset(root, n_train=80, n_test_normal=1, n_test_abnormal=1, size=64, seed=0)
        train(load_config(None, [*TINY, f"data.cache_dir={root / 'cache'}"]), [manifest], root / "run",
              progress=False)
        _BUILT["root"] = root
    return _BUILT["root"]


def brain_phantom(root: Path) -> Path:
    """An abnormal brain MRI phantom (8-bit gray PNG, 64×64) of the dataset at ``root``."""
    return root / "brain_mri" / "test" / "abnormal" / "brain_mri_test_abnormal_0000.png"
