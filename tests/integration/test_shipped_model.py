"""The shipped universal model (``models/medmoe-universal``, installed by ``make install``): verified at load,
the default of detect, serve, export, demo and models, its card true to its metrics, a starting point for
add-task and train --init; and ``medmoe package``, which made it, on a run trained here."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file
from skimage.data import retina
from typer.testing import CliRunner

from api_fixtures import run_cli
from engine_fixtures import synthetic
from medmoe.api import Detector
from medmoe.api.shipped import DEFAULT_MODEL, InstalledModel, installed_models
from medmoe.cli import app
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.engine.config import load_config
from medmoe.engine.data import save_manifests
from medmoe.engine.train import initialise_from, train
from medmoe.errors import CheckpointError, ConfigError
from medmoe.model.registry import create_model
from medmoe.release.card import CARD_NAME
from medmoe.release.package import package_model
from medmoe.report.evaluation_report import evaluate_run

pytestmark = pytest.mark.slow

CT_SMALL = get_testdata_file("CT_small.dcm", download=False)
TASKS = ["chest_xray", "brain_mri", "fundus", "breast_us", "head_ct"]


@pytest.fixture(scope="module")
def shipped() -> InstalledModel:
    models = installed_models()
    assert DEFAULT_MODEL in models, "the shipped model is not installed: pip install ./models/medmoe-universal"
    return models[DEFAULT_MODEL]


@pytest.fixture(scope="module")
def label() -> str:
    return f"{DEFAULT_MODEL} {version(DEFAULT_MODEL)}"


@pytest.fixture(scope="module")
def retina_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fundus") / "retina.png"
    Image.fromarray(retina()).save(path)
    return path


def _copy(shipped: InstalledModel, to: Path) -> Path:
    return Path(shutil.copytree(shipped.path, to, ignore=shutil.ignore_patterns("__pycache__", "*.py")))


def test_the_shipped_model_is_installed_versioned_small_and_the_default(shipped: InstalledModel, label: str) -> None:
    meta = json.loads((shipped.path / "model.json").read_text())
    weights = (shipped.path / "model.safetensors").read_bytes()
    assert len(weights) <= 40 * 2**20 and hashlib.sha256(weights).hexdigest() == meta["weights"]["sha256"]
    assert meta["release"] == {"name": DEFAULT_MODEL, "version": version(DEFAULT_MODEL)}
    assert meta["info"]["profile"] == "cpu-feat" and meta["medmoe_version"]
    detector = Detector.load()  # no path: the shipped model
    assert detector.spec.label == label and detector.spec.weights_sha256 == meta["weights"]["sha256"]
    assert detector.tasks.ids == TASKS and detector.spec.calibration is not None
    assert Detector.load(DEFAULT_MODEL).spec.weights_sha256 == meta["weights"]["sha256"]  # by name


def test_a_corrupted_or_foreign_format_copy_is_refused_with_one_clear_error(shipped: InstalledModel,
                                                                          tmp_path: Path) -> None:
    corrupt = _copy(shipped, tmp_path / "corrupt")
    blob = bytearray((corrupt / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (corrupt / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        Detector.load(corrupt)
    for format_version, words in ((99, "newer than this medmoe reads; upgrade medmoe"),
                                  (0, "older than this medmoe reads .* retrain the model")):
        copy = _copy(shipped, tmp_path / f"format{format_version}")
        meta = json.loads((copy / "model.json").read_text())
        (copy / "model.json").write_text(json.dumps({**meta, "format_version": format_version}))
        with pytest.raises(CheckpointError, match=words):
            Detector.load(copy)


@pytest.mark.parametrize(("scan", "prompt", "task"), [(CT_SMALL, "Head CT slice.", "head_ct"),
                                                      ("retina", "Retinal fundus image.", "fundus")])
def test_detect_answers_a_real_scan_without_a_model_or_training(scan: str, prompt: str, task: str, retina_png: Path,
                                                                label: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = str(retina_png) if scan == "retina" else scan
    code, output = run_cli([path, "--prompt", prompt, "--out", str(tmp_path / "out"), "--no-progress", "--workers",
                            "0"], capsys, monkeypatch)
    assert code == 0, output
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["task"] == task and row["error"] == "" and row["model"] == label
    assert float(row["score"]) > 0 and 0 < float(row["p_value"]) <= 1 and row["decision"] in ("normal", "anomalous")
    assert f"by {label}" in " ".join(output.split())
    assert (tmp_path / "out" / row["overlay"]).is_file()


def test_serve_export_and_models_default_to_the_shipped_model(retina_png: Path, label: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda api, **kwargs: served.update(app=api))
    done = CliRunner().invoke(app, ["serve"])
    assert done.exit_code == 0, done.output
    with TestClient(served["app"]) as client:
        health = client.get("/healthz").json()["model"]
        answer = client.post("/v1/detect", files={"file": ("retina.png", retina_png.read_bytes(), "image/png")},
                             data={"prompt": "Retinal fundus image."}).json()
    assert (health["name"], health["version"]) == tuple(label.split()) and answer["model"] == label

    done = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "universal.onnx")])
    assert done.exit_code == 0 and f"exported {label}" in " ".join(done.output.split()), done.output
    assert Detector.load(tmp_path / "universal.onnx", backend="auto").spec.label == label

    done = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert done.exit_code == 0 and label in done.output and "profile cpu-feat" in done.output, done.output


def test_the_demo_screens_real_samples_and_phantoms_with_the_shipped_model(label: str, tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    with open(tmp_path / "demo" / "detect" / "results.csv", newline="") as handle:
        rows = {Path(r["source"]).name: r for r in csv.DictReader(handle)}
    real = {"CT_small.dcm": "head_ct", "emri_small.dcm": "brain_mri", "RG1_UNCR.dcm": "chest_xray",
            "retina.png": "fundus"}
    assert {name: rows[name]["task"] for name in real} == real
    assert len(rows) == len(real) + 4 * len(TASKS)  # and two normal and two abnormal phantoms per task
    assert all(r["error"] == "" and r["model"] == label and r["decision"] for r in rows.values())
    assert all((tmp_path / "demo" / "detect" / r["overlay"]).is_file() for r in rows.values())
    assert label in done.output and "results.csv" in done.output


def test_the_card_states_the_shipped_metrics_and_weights(shipped: InstalledModel) -> None:
    card = (shipped.path / CARD_NAME).read_text()
    metrics = json.loads((shipped.path / "metrics.json").read_text())
    meta = json.loads((shipped.path / "model.json").read_text())
    assert meta["weights"]["sha256"] in card and "not a medical device" in card
    for task in TASKS:
        m = metrics["tasks"][task]
        row = next(line for line in card.splitlines() if line.startswith(f"| {task} ") and "[" in line)
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        for cell, metric in zip(cells[1:], ("auroc", "ap", "f1_val", "acc_val"), strict=True):
            low, high = m["ci95"][metric]
            assert cell == f"{100 * m[metric]:.2f} [{100 * low:.1f}, {100 * high:.1f}]", (task, metric)
        assert f"{m['n_normal']} / {m['n_abnormal']}" in card
    assert f"AUROC {100 * metrics['mean']['auroc']:.2f}" in card


def test_add_task_starts_from_the_shipped_model(label: str, tmp_path: Path) -> None:
    knees = synthetic(tmp_path / "knee", n_train=6, n_test=1, tasks=("brain_mri",)).root / "brain_mri"
    done = CliRunner().invoke(app, ["add-task", "--task", "knee_mri", "--prompt", "Knee MRI slice.", "--data",
                                    str(knees), "--out", str(tmp_path / "run"), "--no-progress"])
    assert done.exit_code == 0, done.output
    grown = Detector.load(tmp_path / "run")
    assert grown.tasks.ids == [*TASKS, "knee_mri"] and grown.spec.label == "run"


def test_a_trained_run_is_packaged_with_its_card_and_is_a_starting_point(tmp_path: Path) -> None:
    data = synthetic(tmp_path / "data", n_train=12, n_test=3)
    config = load_config("cpu-feat", ["model.resolution=64", "model.feature_width=16", "train.epochs=1",
                                      f"data.cache_dir={tmp_path / 'cache'}"])
    train(config, [data], tmp_path / "run", progress=False, provenance={"profile": "cpu-feat"})
    evaluate_run(load_checkpoint(tmp_path / "run"), [data], tmp_path / "eval" / "metrics.json",
                 cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(CheckpointError, match="stores no manifests"):
        package_model(tmp_path / "run", tmp_path / "eval" / "metrics.json", tmp_path / "pkg", name="tiny-model",
                      version="0.1.0", reproduce="")
    save_manifests([data], tmp_path / "run")  # as 'medmoe train' does
    with pytest.raises(ConfigError, match="lower-case letters"):
        package_model(tmp_path / "run", tmp_path / "eval" / "metrics.json", tmp_path / "pkg", name="Tiny Model",
                      version="0.1.0", reproduce="")
    made = package_model(tmp_path / "run", tmp_path / "eval" / "metrics.json", tmp_path / "pkg", name="tiny-model",
                         version="0.1.0", reproduce="medmoe train ...")
    assert made.model_dir == tmp_path / "pkg" / "src" / "tiny_model"
    pyproject = (tmp_path / "pkg" / "pyproject.toml").read_text()
    assert 'tiny-model = "tiny_model"' in pyproject and '"medmoe.models"' in pyproject
    card = made.card.read_text()
    assert "# Model card: tiny-model 0.1.0" in card and "medmoe train ..." in card
    licence = (tmp_path / "pkg" / "LICENSE").read_text()
    assert "`head_ct`: medmoe.data.synthetic (generated phantoms, never real data). Terms: not recorded." in licence
    packaged = Detector.load(made.model_dir)
    assert packaged.spec.label == "tiny-model 0.1.0"
    made = package_model(tmp_path / "run", tmp_path / "eval" / "metrics.json", tmp_path / "pkg", name="tiny-model",
                         version="0.2.0", reproduce="")  # replaces its own earlier package
    assert Detector.load(made.model_dir).spec.label == "tiny-model 0.2.0"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a model package"):
        package_model(tmp_path / "run", tmp_path / "eval" / "metrics.json", tmp_path / "other", name="tiny-model",
                      version="0.1.0", reproduce="")

    # train --init: the learned weights start from the package's, the rest is fitted on the new data
    start = load_checkpoint(made.model_dir)
    fresh = create_model(start.config.model)
    copied = initialise_from(fresh, start)
    theirs = dict(start.model.named_parameters())
    assert copied and all(torch.equal(p, theirs[n]) for n, p in fresh.named_parameters() if n in copied)
    done = CliRunner().invoke(app, ["train", "--init", str(made.model_dir), "--data", str(data.root), "--out",
                                    str(tmp_path / "tuned"), "--epochs", "1", "--set", "model.resolution=32",
                                    "--set", f"data.cache_dir={tmp_path / 'cache'}", "--no-progress"])
    assert done.exit_code == 0, done.output
    tuned = load_checkpoint(tmp_path / "tuned")
    assert tuned.info["initialised_from"].startswith("tiny-model 0.2.0 (sha256 ")
    assert tuned.config.model == start.config.model  # its model settings, not the profile's or --set's
