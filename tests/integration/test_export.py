"""ONNX export: files and sidecar, torch/onnx agreement, the torch-free backend, integrity checks, CLI."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medmoe.api.export as export_module
from api_fixtures import THRESHOLDS, brain_images
from medmoe import Detector, __version__
from medmoe.api.export import MAP_ATOL, SCORE_ATOL, SCORE_RTOL, export_onnx
from medmoe.api.onnx_backend import OnnxBackend
from medmoe.cli import main
from medmoe.errors import CheckpointError


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_run, tmp_path_factory.mktemp("onnx") / "model.onnx").onnx_path


def test_export_writes_model_and_sidecar(tiny_run: Path, tmp_path: Path) -> None:
    result = export_onnx(tiny_run, tmp_path / "sub" / "tiny.onnx")
    assert result.onnx_path.is_file() and result.sidecar_path == tmp_path / "sub" / "tiny.medmoe.json"
    assert result.max_score_diff <= SCORE_ATOL + SCORE_RTOL and result.max_map_diff <= MAP_ATOL
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["format"] == "medmoe-onnx" and meta["exported_by"] == __version__
    assert meta["onnx"]["inputs"] == ["image", "text_embedding"]
    assert meta["onnx"]["outputs"] == ["score", "anomaly_map", "hallucination_map", "router_weights",
                                       "scope_distances"]
    assert meta["model"]["trust"]["scores"].keys() == set(THRESHOLDS) - {"head_ct"}
    spec = meta["model"]
    assert [t["id"] for t in spec["tasks"]] == list(THRESHOLDS)
    assert spec["tasks"][1]["prompt"] == "Brain MRI slice." and spec["tasks"][0]["dicom_modalities"] == ["CR", "DX"]
    assert np.asarray(spec["prompt_embeddings"]).shape == (5, 384)
    assert spec["thresholds"]["brain_mri"] == 0.05 and math.isnan(spec["thresholds"]["head_ct"])
    assert (spec["resolution"], spec["channels"], spec["text_encoder"], spec["uses_prompt"]) == (32, 1, "minilm", True)
    assert spec["medmoe_version"] == __version__


def test_onnx_and_torch_agree_on_images(tiny_run: Path, exported: Path, phantoms: Path) -> None:
    files = [p for task in ("brain_mri", "chest_xray") for p in sorted((phantoms / task / "test").rglob("*.png"))]
    torch_results = Detector.load(tiny_run).predict_batch(files, task="brain_mri", batch_size=3)
    onnx_detector = Detector.load(exported, backend="onnx")
    assert onnx_detector.backend.name == "onnx"
    onnx_results = onnx_detector.predict_batch(files, task="brain_mri", batch_size=3)
    np.testing.assert_allclose([r.score for r in onnx_results], [r.score for r in torch_results],
                               rtol=SCORE_RTOL, atol=SCORE_ATOL)
    for ours, theirs in zip(onnx_results, torch_results, strict=True):
        np.testing.assert_allclose(ours.anomaly_map, theirs.anomaly_map, rtol=0, atol=MAP_ATOL)
        np.testing.assert_allclose(ours.hallucination_map, theirs.hallucination_map, rtol=0, atol=MAP_ATOL)
        np.testing.assert_allclose(ours.expert_weights, theirs.expert_weights, rtol=0, atol=MAP_ATOL)
        assert (ours.task, ours.threshold, ours.decision) == (theirs.task, theirs.threshold, theirs.decision)
        # the trust outputs come out of the ONNX graph and the sidecar alike
        assert (ours.p_value, ours.fpr, ours.resembles, ours.prompt_mismatch, ours.out_of_scope) == \
            (theirs.p_value, theirs.fpr, theirs.resembles, theirs.prompt_mismatch, theirs.out_of_scope)
    assert any(r.prompt_mismatch for r in torch_results)  # chest phantoms asked about as brain MRI


def test_onnx_backend_runs_without_torch(tiny_run: Path, exported: Path, phantoms: Path) -> None:
    image = brain_images(phantoms)[-1]
    script = (
        "import json, sys\n"
        "from medmoe import Detector\n"
        f"d = Detector.load({str(exported.parent)!r}, backend='auto')\n"
        f"by_task = d.predict({str(image)!r}, task='brain_mri')\n"
        f"by_prompt = d.predict({str(image)!r}, prompt='Brain MRI slice.')\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "print(json.dumps([d.backend.name, by_task.score, by_prompt.score, by_task.p_value, by_task.resembles]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    backend, by_task, by_prompt, p_value, resembles = json.loads(done.stdout.strip().splitlines()[-1])
    expected = Detector.load(tiny_run).predict(image, task="brain_mri")
    assert backend == "onnx" and by_task == by_prompt
    assert by_task == pytest.approx(expected.score, rel=SCORE_RTOL, abs=SCORE_ATOL)
    assert (p_value, resembles) == (expected.p_value, expected.resembles)


def test_prompt_free_model_without_hallucination_exports(plain_run: Path, tmp_path: Path, phantoms: Path) -> None:
    result = export_onnx(plain_run, tmp_path / "plain.onnx")
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["onnx"]["inputs"] == ["image"] and meta["onnx"]["outputs"] == ["score", "anomaly_map", "router_weights",
                                                                                   "scope_distances"]
    assert meta["model"]["prompt_embeddings"] is None
    image = brain_images(phantoms)[0]
    ours = Detector.load(result.onnx_path, backend="onnx").predict(image, task="fundus")
    theirs = Detector.load(plain_run).predict(image, task="fundus")
    assert ours.hallucination_map is None and ours.task == "fundus"
    assert ours.score == pytest.approx(theirs.score, rel=SCORE_RTOL, abs=SCORE_ATOL)


def test_tampered_or_incomplete_exports_are_refused(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    blob = bytearray(exported.read_bytes())
    copy.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="no metadata file 'model.medmoe.json'"):
        OnnxBackend(copy)
    sidecar = exported.with_name("model.medmoe.json").read_text()
    (tmp_path / "model.medmoe.json").write_text(sidecar)
    assert OnnxBackend(copy).spec.resolution == 32
    blob[-1] ^= 0xFF
    copy.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        OnnxBackend(copy)
    (tmp_path / "model.medmoe.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a medmoe ONNX sidecar"):
        OnnxBackend(copy)
    (tmp_path / "other.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="2 .onnx files"):
        Detector.load(tmp_path, backend="onnx")


def test_export_refuses_bad_targets_and_removes_a_wrong_export(tiny_run: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=r"must end in \.onnx"):
        export_onnx(tiny_run, tmp_path / "model.bin")
    monkeypatch.setattr(export_module, "MAP_ATOL", -1.0)  # every export now "disagrees" with torch
    with pytest.raises(CheckpointError, match="disagrees with torch"):
        export_onnx(tiny_run, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_and_detect_commands(tiny_run: Path, phantoms: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["medmoe", *args])
        try:
            main()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    target = tmp_path / "model.onnx"
    assert run("export", "--model", str(tiny_run), "--format", "onnx", "--out", str(target)) == 0
    assert "exported" in capsys.readouterr().out and target.is_file()
    assert run("export", "--model", str(tiny_run), "--format", "tflite", "--out", str(target)) == 2
    assert "only 'onnx'" in capsys.readouterr().err
    out = tmp_path / "detect"
    image = brain_images(phantoms)[0]
    assert run("detect", str(image), "--task", "brain_mri", "--model", str(target), "--out", str(out),
               "--no-progress") == 0
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        (row,) = csv.DictReader(handle)
    expected = Detector.load(tiny_run).predict(image, task="brain_mri").score
    assert float(row["score"]) == pytest.approx(expected, rel=1e-5)


def test_threads_reach_both_backends_and_the_model_keeps_its_identity(tiny_run: Path, exported: Path,
                                                                       phantoms: Path) -> None:
    import torch

    from medmoe.errors import ConfigError

    before = torch.get_num_threads()
    try:
        torch_detector = Detector.load(tiny_run, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    onnx_detector = Detector.load(exported, backend="onnx", threads=1)
    assert onnx_detector.backend.session.get_session_options().intra_op_num_threads == 1
    image = brain_images(phantoms)[0]
    ours, theirs = torch_detector.predict(image, task="brain_mri"), onnx_detector.predict(image, task="brain_mri")
    # the export answers as the run it came from: same name and weights digest in every result
    assert (theirs.model, theirs.model_sha256) == (ours.model, ours.model_sha256) == (tiny_run.name,
                                                                                     ours.model_sha256)
    assert len(ours.model_sha256) == 12
    with pytest.raises(ConfigError, match="at least 1"):
        Detector.load(tiny_run, threads=0)
