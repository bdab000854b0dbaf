"""Shared by the Detector, detect-CLI and export tests: tiny saved models and phantom images.

The models are untrained (random weights, saved with ``save_checkpoint``), which is all these tests
need: they check plumbing, preprocessing, prompts, thresholds and backends, not detection quality.
The prompt embeddings are real all-MiniLM-L6-v2 embeddings, so prompt matching behaves as in use.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.engine.checkpoint import save_checkpoint
from medmoe.engine.config import RunConfig, with_text_dim
from medmoe.engine.train import prompt_embeddings_for
from medmoe.model.config import ModelConfig
from medmoe.model.registry import create_model
from medmoe.tasks import default_registry

#: Thresholds of the saved models: head_ct has none (as after a run without its validation normals).
THRESHOLDS = {"chest_xray": 0.05, "brain_mri": 0.05, "fundus": 0.05, "breast_us": 0.05, "head_ct": math.nan}


def save_tiny_model(run_dir: Path, *, prompt: bool = True, hallucination: bool = True,
                    architecture: str = "moe") -> Path:
    """Save an untrained model (5 experts, top-2) of the five default tasks into ``run_dir``: the pixel
    model at 32×32, or ``feature_moe`` (pretrained trunk, narrow bottleneck) at 64×64."""
    tasks = default_registry()
    sizes = {"resolution": 32, "fc_width": 64} if architecture == "moe" else \
        {"resolution": 64, "feature_width": 16, "feature_expert": "retrieve", "score_top_fraction": 0.1}
    config = RunConfig(model=ModelConfig(architecture=architecture, top_k=2, prompt=prompt,
                                         hallucination=hallucination, **sizes))
    embeddings = prompt_embeddings_for(config, tasks)
    if embeddings is not None:
        config = with_text_dim(config, embeddings.shape[1])
    torch.manual_seed(0)
    model = create_model(config.model).eval()
    if architecture != "moe":  # statistics and memories from a few random "normals"
        features = model.prepare(torch.rand(2 * len(tasks), 1, config.model.resolution, config.model.resolution))
        model.fit_data(features, torch.arange(len(tasks)).repeat(2), embeddings, seed=0)
    save_checkpoint(run_dir, model=model, config=config, tasks=tasks, prompt_embeddings=embeddings,
                    thresholds=THRESHOLDS, info={"note": "untrained test model"})
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of a prompt-routed model with hallucination head."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def feature_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of an untrained ``feature_moe`` (pretrained trunk, prompt routing, hallucination head)."""
    return save_tiny_model(tmp_path_factory.mktemp("feature-run"), architecture="feature_moe")


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of a model without prompts and without the hallucination head (the ablations)."""
    return save_tiny_model(tmp_path_factory.mktemp("plain-run"), prompt=False, hallucination=False)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset (48×48 phantoms, 2 normal + 2 abnormal test images per task)."""
    root = tmp_path_factory.mktemp("phantoms")
    write_synthetic_dataset(root, n_train=1, n_test_normal=2, n_test_abnormal=2, size=48, seed=0)
    return root


def brain_images(root: Path) -> list[Path]:
    """The brain MRI test phantoms of a :func:`phantoms` dataset (normal first)."""
    return sorted((root / "brain_mri" / "test" / "normal").glob("*.png")) + \
        sorted((root / "brain_mri" / "test" / "abnormal").glob("*.png"))
