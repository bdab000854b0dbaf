"""A colour model (``model.in_channels: 3``): fundus photographs reach the trunk's RGB stem in colour, a gray task's
images are read gray and replicated; the model trains, exports to ONNX (checked against torch by the export) and
``medmoe detect`` scores the same from the export as from torch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medmoe.api import Detector
from medmoe.api.export import export_onnx
from medmoe.cli import app
from medmoe.data.manifest import read_manifest
from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.engine.config import load_config
from medmoe.engine.train import train

pytestmark = pytest.mark.slow

TINT = np.array([1.0, 0.6, 0.3])
"""A fundus photograph's red-orange: the phantoms' gray ``g`` becomes ``(g, 0.6 g, 0.3 g)``."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Brain MRI and fundus phantoms, the fundus images tinted into colour (their masks stay as they are)."""
    root = tmp_path_factory.mktemp("colour")
    write_synthetic_dataset(root, n_train=8, n_test_normal=2, n_test_abnormal=2, size=48, seed=0,
                            tasks=("brain_mri", "fundus"))
    for path in (root / "fundus").glob("[!m]*/*/*.png"):  # train/ and test/, not masks/
        gray = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        Image.fromarray((gray[..., None] * TINT).round().astype(np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("colour-run")
    config = load_config("cpu-feat", ["model.in_channels=3", "model.resolution=64", "model.feature_width=16",
                                "train.epochs=1", "train.batch_size=16", f"data.cache_dir={out / 'cache'}",
                                "train.num_threads=1"])
    train(config, [read_manifest(data / "manifest.csv")], out / "run", progress=False)
    return out / "run"


def test_a_colour_task_keeps_its_colour_and_a_gray_task_is_replicated(data: Path, run: Path) -> None:
    detector = Detector.load(run)
    fundus = detector.prepare(next((data / "fundus" / "test" / "normal").glob("*.png")), task="fundus").model_input
    brain = detector.prepare(next((data / "brain_mri" / "test" / "normal").glob("*.png")), task="brain_mri").model_input
    assert fundus.shape == brain.shape == (3, 64, 64)
    lit = fundus[0] > 0.2
    np.testing.assert_allclose(fundus[1][lit] / fundus[0][lit], TINT[1], atol=0.05)  # the tint, not a gray
    assert np.array_equal(brain[0], brain[1]) and np.array_equal(brain[0], brain[2])


def test_a_colour_model_exports_and_scores_the_same_from_onnx(data: Path, run: Path, tmp_path: Path) -> None:
    exported = export_onnx(run, tmp_path / "model.onnx")  # refuses an export that disagrees with torch
    assert exported.max_score_diff < 1e-4
    images = sorted((data / "fundus" / "test").rglob("*.png"))
    out = tmp_path / "detect"
    done = CliRunner().invoke(app, ["detect", str(data / "fundus" / "test"), "--model", str(exported.onnx_path),
                                    "--task", "fundus", "--out", str(out), "--no-progress", "--no-overlays"])
    assert done.exit_code == 0, done.output
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = {r["source"]: r for r in csv.DictReader(handle)}
    torch_results = Detector.load(run).predict_batch(images, task="fundus")
    assert len(rows) == len(torch_results) == 4
    for result in torch_results:
        assert float(rows[result.source]["score"]) == pytest.approx(result.score, rel=1e-3, abs=1e-5)
