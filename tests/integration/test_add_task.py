"""``medmoe add-task``: a new task from a few normals; the old tasks' outputs unchanged bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from api_fixtures import save_tiny_model
from medmoe import Detector
from medmoe.api.export import export_onnx
from medmoe.cli import app as cli_app
from medmoe.data.synthetic import write_synthetic_dataset
from medmoe.engine.add_task import add_task, folder_manifest
from medmoe.errors import CheckpointError, ConfigError, DatasetError
from medmoe.tasks import Task

KNEE = Task("knee_mri", "knee", "MRI", "Knee MRI slice.", dicom_modalities=("MR",), dicom_body_parts=("KNEE",))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("add-data")
    write_synthetic_dataset(root, n_train=12, n_test_normal=3, n_test_abnormal=3, size=64, seed=1)
    return root


def _old_images(data: Path) -> list[Path]:
    return [p for t in ("chest_xray", "brain_mri", "fundus", "breast_us", "head_ct")
            for p in sorted((data / t / "test").rglob("*.png"))]


def _same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("expert", ["expert", "route"])
def test_old_tasks_are_bit_exact_and_the_new_one_is_scored(feature_run: Path, data: Path, tmp_path: Path,
                                                           expert: str) -> None:
    # the knee task's "normals": breast ultrasound phantoms under another name (any images of one kind do)
    manifest = folder_manifest(data / "breast_us" / "train", KNEE.id)
    result = add_task(feature_run, KNEE, [manifest], tmp_path / "new", expert=expert, progress=False)
    assert (result.n_train, result.n_val) == (10, 2)  # 12 normals: a 20 % validation carve
    old, new = Detector.load(feature_run), Detector.load(result.run_dir)
    assert new.tasks.ids == [*old.tasks.ids, "knee_mri"]
    images = _old_images(data)
    for task in old.tasks.ids:
        for before, after in zip(old.predict_batch(images, task=task, batch_size=4),
                                 new.predict_batch(images, task=task, batch_size=4), strict=True):
            assert before.score == after.score and np.array_equal(before.anomaly_map, after.anomaly_map)
            assert _same(before.threshold, after.threshold) and _same(before.p_value, after.p_value)
            assert np.array_equal(after.expert_weights[:5], before.expert_weights) and after.expert_weights[5] == 0
    knee = new.predict_batch(sorted((data / "breast_us" / "test").rglob("*.png")), prompt="knee MRI")
    assert all(r.task == "knee_mri" and np.isfinite(r.score) and r.p_value > 0 for r in knee)
    assert all(r.resembles in ("knee_mri", "breast_us") for r in knee if not r.out_of_scope)
    weights = knee[0].expert_weights
    assert weights.shape == (6,) and weights.sum() == pytest.approx(1.0)
    assert (weights[5] == 1.0) == (expert == "expert")
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["info"]["added_tasks"][0]["task"] == "knee_mri" and "knee_mri" in meta["trust"]["scores"]
    assert (result.run_dir / "manifests" / "knee_mri.csv").is_file()
    assert export_onnx(result.run_dir, tmp_path / "new.onnx").max_score_diff < 1e-4  # the export check passes


def test_a_second_add_keeps_the_first(feature_run: Path, data: Path, tmp_path: Path) -> None:
    first = add_task(feature_run, KNEE, [folder_manifest(data / "breast_us" / "train", "knee_mri")],
                     tmp_path / "one", progress=False).run_dir
    hip = Task("hip_xray", "hip", "X-ray", "Hip X-ray.")
    second = add_task(first, hip, [folder_manifest(data / "fundus" / "train", "hip_xray")], tmp_path / "two",
                      progress=False).run_dir
    images = sorted((data / "breast_us" / "test").rglob("*.png"))
    a = Detector.load(first).predict_batch(images, task="knee_mri")
    b = Detector.load(second).predict_batch(images, task="knee_mri")
    assert [r.score for r in a] == [r.score for r in b]
    assert Detector.load(second).predict(images[0], prompt="Hip X-ray.").task == "hip_xray"


def test_misuse_is_refused_with_one_message(feature_run: Path, tiny_run: Path, data: Path,
                                            tmp_path: Path) -> None:
    knee = [folder_manifest(data / "breast_us" / "train", "knee_mri")]
    with pytest.raises(ConfigError, match="already in the model"):
        add_task(feature_run, Task("brain_mri", "brain", "MRI", "Brain MRI."),
                 [folder_manifest(data / "brain_mri" / "train", "brain_mri")], tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="feature_moe"):
        add_task(tiny_run, KNEE, knee, tmp_path / "c", progress=False)
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted((data / "breast_us" / "train").rglob("*.png"))[:3]:
        (few / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DatasetError, match="at least 4"):
        add_task(feature_run, KNEE, [folder_manifest(few, "knee_mri")], tmp_path / "d", progress=False)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        add_task(feature_run, KNEE, knee, taken, progress=False)
    with pytest.raises(ConfigError, match="added tasks use 'expert'"):
        add_task(add_task(feature_run, KNEE, knee, tmp_path / "e", progress=False).run_dir,
                 Task("hip_xray", "hip", "X-ray", "Hip X-ray."), knee, tmp_path / "f", expert="route", progress=False)
    old = save_tiny_model(tmp_path / "old", architecture="feature_moe", calibrated=False)
    with pytest.raises(CheckpointError, match="medmoe calibrate"):
        add_task(old, KNEE, knee, tmp_path / "g", progress=False)


def test_add_task_command_then_detect(feature_run: Path, data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(cli_app, ["add-task", "--model", str(feature_run), "--task", "knee_mri", "--prompt",
                                   "Knee MRI slice.", "--data", str(data / "breast_us" / "train"), "--out",
                                   str(tmp_path / "knee"), "--dicom-modality", "MR", "--dicom-body-part", "knee",
                                   "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "added 'knee_mri'" in done.output and "10 normals" in done.output
    # 12 normals give 12 calibration scores: p ≥ 1/13, so 0.05 is out of reach, said loudly at add time
    assert "2 validation normals and 10 training normals scored leave-one-image-out" in done.output
    assert "cannot be decided at a false-positive rate of 0.05" in done.output
    task = Detector.load(tmp_path / "knee").tasks["knee_mri"]
    assert (task.organ, task.modality, task.dicom_body_parts) == ("knee", "mri", ("KNEE",))
    scanned = runner.invoke(cli_app, ["detect", str(data / "breast_us" / "test"), "--model", str(tmp_path / "knee"),
                                      "--task", "knee_mri", "--out", str(tmp_path / "det"), "--no-progress"])
    assert scanned.exit_code == 0, scanned.output
    assert "scored 6 of 6" in scanned.output


def test_twenty_normals_calibrate_to_a_reachable_rate(feature_run: Path, tmp_path: Path) -> None:
    # 20 normals: a 20 % carve leaves 4 validation normals (p ≥ 0.2, nothing could ever be flagged at 0.05);
    # the 16 training normals' leave-one-image-out scores join them, so 0.05 is reachable
    root = tmp_path / "twenty"
    write_synthetic_dataset(root, n_train=20, n_test_normal=2, n_test_abnormal=2, size=64, seed=3)
    result = add_task(feature_run, KNEE, [folder_manifest(root / "breast_us" / "train", KNEE.id)], tmp_path / "new",
                      progress=False)
    assert (result.n_train, result.n_val) == (16, 4) and result.smallest_p == pytest.approx(1 / 21)
    assert result.calibrated_on == ("4 validation normals and 16 training normals scored leave-one-image-out "
                                    "(memory without their own patches)")
    detector = Detector.load(result.run_dir)
    scores = detector.spec.calibration.scores["knee_mri"]
    assert len(scores) == 20
    images = sorted((root / "breast_us" / "train").rglob("*.png"))
    in_sample = [r.score for r in detector.predict_batch(images, task="knee_mri")]
    assert np.median(scores) > np.median(in_sample)  # an image met without its own patches looks less familiar
    answer = detector.predict(sorted((root / "breast_us" / "test").rglob("*.png"))[0], task="knee_mri")
    assert answer.fpr == 0.05 and not any("below the smallest p-value" in w for w in answer.warnings)
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["info"]["added_tasks"][0]["calibrated_on"] == result.calibrated_on
