"""Every registered architecture — and one a test registers, as a contributor would add one — goes the whole
way: trained, exported to ONNX (checked against torch by the export), and scored by ``medmoe detect``
from the export, with the same scores as torch."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medmoe.api import Detector
from medmoe.api.export import export_onnx
from medmoe.cli import app
from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.engine.config import load_config
from medmoe.engine.train import train
from medmoe.model import ARCHITECTURES
from medmoe.model.base import AnomalyModel
from medmoe.model.baselines.patchcore import PatchCoreSettings
from medmoe.model.config import ArchitectureSettings, ModelConfig
from medmoe.model.feature.settings import FeatureMoESettings
from medmoe.model.output import ModelOutput
from medmoe.model.registry import architecture, register_model
from medmoe.model.vision import PixelSettings

pytestmark = pytest.mark.slow

TOY = "toy_mean"
TRUNK_MODELS = ("feature_moe", "patchcore", "feature_nn")


@dataclass(frozen=True)
class ToySettings(ArchitectureSettings):
    """The toy's own setting: the power of each pixel's distance to the mean."""

    power: float = 2.0


SMALL: dict[type[ArchitectureSettings], list[str]] = {
    PixelSettings: ["model.fc_width=64"], FeatureMoESettings: ["model.feature_width=16"],
    ToySettings: ["model.power=1"],
    PatchCoreSettings: ["model.memory_distance=cosine", "model.memory_coverage=1", "model.memory_window=1"]}
"""Per settings family, what makes its models small, or settings that must travel through every step (the toy's;
PatchCore's position-aware search, whose graph differs most from the others')."""


class ToyMean(AnomalyModel):
    """The smallest architecture: each pixel's distance to the training normals' mean image, to a power."""

    mean: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.power = config.settings_as(ToySettings).power
        self.register_buffer("mean", torch.zeros(config.in_channels, config.resolution, config.resolution))

    def fit_data(self, inputs: torch.Tensor, task_ids: torch.Tensor, task_embeddings: torch.Tensor | None,
                 seed: int = 0) -> None:
        self.mean.copy_(inputs.mean(dim=0))

    def forward_prepared(self, inputs: torch.Tensor, text_embedding: torch.Tensor | None = None) -> ModelOutput:
        amap = (inputs - self.mean).abs().pow(self.power).mean(dim=1, keepdim=True)
        return ModelOutput(x_hat=None, u=None, anomaly_map=amap, score=amap.flatten(1).mean(dim=1),
                           router_weights=None, router_logits=None, features=inputs.mean(dim=(2, 3)))


@pytest.fixture(scope="module", autouse=True)
def toy_architecture() -> Iterator[None]:
    register_model(TOY, settings=ToySettings, fixes={"prompt": False, "hallucination": False})(ToyMean)
    yield
    ARCHITECTURES.pop(TOY)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("every-architecture")
    write_synthetic_dataset(root, n_train=6, n_test_normal=2, n_test_abnormal=2, size=48, seed=0)
    return root


def _names() -> list[str]:
    import medmoe.model  # noqa: F401  (fills the registry)

    return [*sorted(ARCHITECTURES), TOY]


@pytest.mark.parametrize("name", _names())
def test_train_export_detect(name: str, data: Path, tmp_path: Path) -> None:
    from medmoe.data.manifest import read_manifest

    size = 64 if name in TRUNK_MODELS else 32
    entry = architecture(name)
    config = load_config(None, [*entry.overrides(), f"model.resolution={size}", *SMALL.get(entry.settings, ()),
                                "train.epochs=1", "train.batch_size=16",
                                f"data.cache_dir={tmp_path / 'cache'}", "train.num_threads=1"])
    run = tmp_path / "run"
    train(config, [read_manifest(data / "manifest.csv")], run, progress=False)
    assert load_checkpoint(run).config.model == config.model  # the family's settings come back as set
    exported = export_onnx(run, tmp_path / "model.onnx")  # refuses an export that disagrees with torch
    assert exported.max_score_diff < 1e-4
    out = tmp_path / "detect"
    done = CliRunner().invoke(app, ["detect", str(data / "brain_mri" / "test"), "--model", str(exported.onnx_path),
                                    "--task", "brain_mri", "--out", str(out), "--no-progress", "--no-overlays"])
    assert done.exit_code == 0, done.output
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(r["error"] == "" and r["decision"] in ("anomalous", "normal") for r in rows)
    torch_results = {r.source: r for r in Detector.load(run).predict_batch(
        sorted((data / "brain_mri" / "test").rglob("*.png")), task="brain_mri")}
    for row in rows:
        assert float(row["score"]) == pytest.approx(torch_results[row["source"]].score, rel=1e-3, abs=1e-5)
