"""A learning test: one short training run on synthetic phantoms of all five tasks detects their
lesions clearly better than chance, per task."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine_fixtures import synthetic
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.engine.config import load_config
from medmoe.engine.evaluate import collect, compute_metrics
from medmoe.engine.train import train

#: Every task's test AUROC must reach this (chance is 0.5; a random scorer on 20 + 20 images stays
#: below it with probability ~0.99).
MIN_AUROC = 0.6


@pytest.mark.slow
def test_short_training_detects_phantom_lesions(tmp_path: Path) -> None:
    data = synthetic(tmp_path / "data", n_train=100, n_test=20)
    config = load_config(None, ["model.resolution=64", "train.batch_size=32", "train.lr=1e-3", "train.epochs=30",
                                f"data.cache_dir={tmp_path / 'cache'}"])
    train(config, [data], tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    metrics = compute_metrics(checkpoint, collect(checkpoint, [data], cache_dir=tmp_path / "cache", progress=False))
    auroc = {task: m.primary.auroc for task, m in metrics.tasks.items()}
    assert set(auroc) == {"chest_xray", "brain_mri", "fundus", "breast_us", "head_ct"}
    assert all(value >= MIN_AUROC for value in auroc.values()), str(auroc)
    assert all(m.routing_accuracy == 1.0 for m in metrics.tasks.values())
