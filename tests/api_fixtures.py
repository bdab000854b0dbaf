"""Shared by the Detector, detect-CLI and export tests: tiny saved models and phantom images.

The models are untrained (random weights, saved with ``save_checkpoint``), which is all these tests
need: they check plumbing, preprocessing, prompts, thresholds and backends, not detection quality.
The prompt embeddings are real all-MiniLM-L6-v2 embeddings, so prompt matching behaves as in use.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medmoe.data.synthetic import make_phantom, write_synthetic_dataset
from medmoe.data.transforms import preprocess_image
from medmoe.engine.checkpoint import save_checkpoint
from medmoe.engine.config import RunConfig, with_text_dim
from medmoe.engine.train import prompt_embeddings_for
from medmoe.engine.trust_fitting import calibrate, fit_scope
from medmoe.model.registry import create_model, model_config
from medmoe.tasks import default_registry

#: Thresholds of the saved models: head_ct has none (as after a run without its validation normals).
THRESHOLDS = {"chest_xray": 0.05, "brain_mri": 0.05, "fundus": 0.05, "breast_us": 0.05, "head_ct": math.nan}


def phantom_batch(resolution: int, per_task: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_task`` normal 48×48 phantoms of each default task (as :func:`phantoms` draws them), preprocessed
    to ``(5·per_task, 1, R, R)``, and their task indices."""
    rng = np.random.default_rng(seed)
    ids = default_registry().ids
    images = [preprocess_image(make_phantom(t, rng, size=48)[0], 1, resolution) for t in ids for _ in range(per_task)]
    return torch.from_numpy(np.stack(images)), torch.arange(len(ids)).repeat_interleave(per_task)


def save_tiny_model(run_dir: Path, *, prompt: bool = True, hallucination: bool = True,
                    architecture: str = "pixel_moe", calibrated: bool = True) -> Path:
    """Save an untrained model (5 experts, top-2) of the five default tasks into ``run_dir``: the pixel
    model at 32×32, or ``feature_moe`` (pretrained trunk, narrow bottleneck) at 64×64. ``calibrated``:
    with a scope head fitted on 8 phantoms per task and p-values on 19 more (smallest p 0.05) (none for head_ct, whose
    threshold is undefined), as training writes them."""
    tasks = default_registry()
    sizes = {"resolution": 32, "fc_width": 64} if architecture == "pixel_moe" else \
        {"resolution": 64, "feature_width": 16, "feature_expert": "retrieve", "score_top_fraction": 0.1}
    config = RunConfig(model=model_config(dict(architecture=architecture, top_k=2, prompt=prompt,
                                               hallucination=hallucination, **sizes)))
    embeddings = prompt_embeddings_for(config, tasks)
    if embeddings is not None:
        config = with_text_dim(config, embeddings.shape[1])
    torch.manual_seed(0)
    model = create_model(config.model).eval()
    if architecture != "pixel_moe":  # statistics and memories from a few random "normals"
        features = model.prepare(torch.rand(2 * len(tasks), 1, config.model.resolution, config.model.resolution))
        model.fit_data(features, torch.arange(len(tasks)).repeat(2), embeddings, seed=0)
    scope = calibration = None
    if calibrated:
        train_x, train_t = phantom_batch(config.model.resolution, 8, seed=1)
        calib_x, calib_t = phantom_batch(config.model.resolution, 19, seed=2)
        keep = calib_t != tasks.index("head_ct")
        calib_x, calib_t = calib_x[keep], calib_t[keep]
        with torch.no_grad():
            scores = model(calib_x, None if embeddings is None else embeddings[calib_t]).score.numpy()
        prepare = model.prepare
        scope = fit_scope(model, config.model, prepare(train_x), train_t, len(tasks))
        calibration = calibrate(model, config.model, scope, tasks.ids, prepare(calib_x), calib_t, scores,
                                train_inputs=prepare(train_x), train_task_indices=train_t)
    save_checkpoint(run_dir, model=model, config=config, tasks=tasks, prompt_embeddings=embeddings,
                    thresholds=THRESHOLDS, info={"note": "untrained test model"}, scope=scope,
                    calibration=calibration)
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


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run ``medmoe detect ARGS`` in-process as the console script does; returns (exit code, stdout+stderr)."""
    from medmoe.cli import main

    monkeypatch.setattr(sys, "argv", ["medmoe", "detect", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err
