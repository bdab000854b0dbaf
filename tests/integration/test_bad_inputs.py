"""A corpus of bad and awkward inputs, generated here: each is refused with one clear line naming the
file and what to do, or scored under a stated policy — through the Python API, ``medmoe detect`` and
the REST API alike, with no traceback and nothing half-written."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

import medmoe.io.policy as policy
from medmoe import Detector
from medmoe.cli import app as cli_app
from medmoe.errors import MedmoeError
from medmoe.serve import create_app


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None
    return Path(path)


def build_corpus(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write the corpus; returns ``{file: what the refusal must say}`` and ``{file: what the warning says}``
    (files scored under a stated policy)."""
    rng = np.random.default_rng(0)
    good = (rng.random((48, 48)) * 255).astype(np.uint8)
    refused: dict[str, str] = {}
    scored: dict[str, str] = {}
    _png(root / "1x1.png", np.zeros((1, 1), np.uint8)); refused["1x1.png"] = "at least 8 pixels a side"
    _png(root / "line.png", np.zeros((1, 4000), np.uint8)); refused["line.png"] = "at least 8 pixels a side"
    _png(root / "tiny.png", np.zeros((7, 50), np.uint8)); refused["tiny.png"] = "at least 8 pixels a side"
    Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(root / "all_nan.tif")
    refused["all_nan.tif"] = "no pixel value is finite"
    Image.fromarray(np.full((16, 16), np.inf, np.float32)).save(root / "all_inf.tif")
    refused["all_inf.tif"] = "no pixel value is finite"
    (root / "empty.png").write_bytes(b""); refused["empty.png"] = "the file is empty"
    (root / "empty.dcm").write_bytes(b""); refused["empty.dcm"] = "the file is empty"
    full = (root / "ok.png")
    _png(full, good)
    (root / "truncated.png").write_bytes(full.read_bytes()[:60]); refused["truncated.png"] = "truncated, corrupt"
    full.unlink()
    (root / "random.png").write_bytes(rng.bytes(500)); refused["random.png"] = "truncated, corrupt"
    (root / "text.jpg").write_text("not an image at all\n"); refused["text.jpg"] = "truncated, corrupt"
    (root / "page.tif").write_text("<html><body>404</body></html>"); refused["page.tif"] = "truncated, corrupt"
    Image.fromarray(good).save(root / "cut.jpg", quality=90)
    (root / "cut.jpg").write_bytes((root / "cut.jpg").read_bytes()[:100]); refused["cut.jpg"] = "truncated, corrupt"
    Image.fromarray(good).save(root / "cut.bmp")
    (root / "cut.bmp").write_bytes((root / "cut.bmp").read_bytes()[:70]); refused["cut.bmp"] = "truncated, corrupt"
    pages = [Image.fromarray(good), Image.fromarray(255 - good)]
    pages[0].save(root / "pages.tiff", save_all=True, append_images=pages[1:])
    refused["pages.tiff"] = "--frame 0..1"
    (root / "unknown.xyz").write_bytes(b"\x00" * 64); refused["unknown.xyz"] = "unknown image format"
    for name, why in (("rtstruct.dcm", "not a DICOM image"), ("badVR.dcm", "Number of Frames"),
                      ("MR_truncated.dcm", "could not be decoded"), ("emri_small.dcm", "--frame 0..9"),
                      ("meta_missing_tsyntax.dcm", "could not be decoded"),
                      ("no_meta.dcm", "not a DICOM image")):
        shutil.copy(_testdata(name), root / name)
        refused[name] = why
    shutil.copy(_testdata("DICOMDIR"), root / "DICOMDIR.dcm"); refused["DICOMDIR.dcm"] = "no pixel data"
    nib.save(nib.Nifti1Image(rng.random((16, 16, 4, 3)).astype(np.float32), np.eye(4)), root / "series.nii.gz")
    refused["series.nii.gz"] = "4-D image"
    nib.save(nib.Nifti1Image(rng.random((16, 16, 5)).astype(np.float32), np.eye(4)), root / "volume.nii.gz")
    refused["volume.nii.gz"] = "--slice 0..4"
    (root / "garbage.nii.gz").write_bytes(gzip.compress(rng.bytes(400))); refused["garbage.nii.gz"] = "not a readable NIfTI"
    (root / "notgzip.nii.gz").write_bytes(rng.bytes(400)); refused["notgzip.nii.gz"] = "not a readable NIfTI"
    _png(root / "big.png", np.zeros((300, 300), np.uint8)); refused["big.png"] = "M pixels"  # with the limit lowered
    # scored under a stated policy
    _png(root / "constant.png", np.full((32, 32), 90, np.uint8)); scored["constant.png"] = "the image is constant"
    nan = rng.random((32, 32)).astype(np.float32)
    nan[:8] = np.nan
    Image.fromarray(nan).save(root / "part_nan.tif"); scored["part_nan.tif"] = ""
    _png(root / "deep.png", (rng.random((32, 32)) * 65535).astype(np.uint16)); scored["deep.png"] = ""
    Image.fromarray((rng.random((32, 32, 4)) * 255).astype(np.uint8), "RGBA").save(root / "alpha.png")
    scored["alpha.png"] = ""
    Image.fromarray(good).convert("P").save(root / "palette.png"); scored["palette.png"] = ""
    tifffile.imwrite(root / "double.tif", rng.random((32, 32))); scored["double.tif"] = ""  # float64: tifffile
    tifffile.imwrite(root / "nan64.tif", np.full((32, 32), np.nan)); refused["nan64.tif"] = "no pixel value is finite"
    return refused, scored


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str], dict[str, str]]:
    monkeypatch.setattr(policy, "MAX_PIXELS", 200 * 200)  # so big.png stands for a decompression bomb
    root = tmp_path / "bad"
    root.mkdir()
    refused, scored = build_corpus(root)
    return root, refused, scored


def test_the_corpus_is_big_enough(corpus: tuple[Path, dict[str, str], dict[str, str]]) -> None:
    root, refused, scored = corpus
    assert len(refused) + len(scored) >= 30 and {p.name for p in root.iterdir()} == set(refused) | set(scored)


def test_api_refuses_each_with_its_reason(tiny_run: Path, corpus: tuple[Path, dict[str, str], dict[str, str]]) -> None:
    root, refused, scored = corpus
    names = sorted(refused) + sorted(scored)
    results = Detector.load(tiny_run).predict_batch([root / n for n in names], task="brain_mri", return_errors=True)
    for name, result in zip(names, results, strict=True):
        if name in refused:
            assert isinstance(result, MedmoeError), name
            assert name in str(result) and refused[name] in str(result), (name, str(result))
            assert "\n" not in str(result) or name.endswith(".dcm"), (name, str(result))
        else:
            assert not isinstance(result, MedmoeError), (name, result)
            assert np.isfinite(result.score) and all(scored[name] in " ".join(result.warnings) for _ in [0])


def test_detect_command_reports_every_file_and_keeps_the_good_ones(tiny_run: Path, tmp_path: Path,
                                                                   corpus: tuple[Path, dict[str, str], dict[str, str]]) -> None:
    root, refused, scored = corpus
    out = tmp_path / "out"
    done = CliRunner().invoke(cli_app, ["detect", str(root), "--model", str(tiny_run), "--task", "brain_mri",
                                        "--out", str(out), "--no-progress", "--no-maps"])
    assert done.exit_code == 1, done.output  # some files failed: said, not hidden
    assert "Traceback" not in done.output and done.exception is None or isinstance(done.exception, SystemExit)
    with (out / "results.csv").open(newline="") as handle:
        rows = {Path(r["source"]).name: r for r in csv.DictReader(handle)}
    # a folder scan lists image files by suffix (and DICOM by its preamble): unknown.xyz is not one
    assert set(rows) == (set(refused) | set(scored)) - {"unknown.xyz"}
    for name, why in refused.items():
        if name == "unknown.xyz":
            continue
        assert rows[name]["score"] == "" and why in rows[name]["error"], (name, rows[name]["error"])
    for name in scored:
        assert rows[name]["error"] == "" and rows[name]["score"] != "", name
    assert f"scored {len(scored)} of {len(rows)}" in done.output


def test_rest_answers_each_with_one_clear_error(tiny_run: Path, corpus: tuple[Path, dict[str, str], dict[str, str]]) -> None:
    root, refused, scored = corpus
    with TestClient(create_app(Detector.load(tiny_run))) as client:
        for name in sorted(refused) + sorted(scored):
            response = client.post("/v1/detect", files={"file": (name, (root / name).read_bytes())},
                                   data={"task": "brain_mri"})
            if name in scored:
                assert response.status_code == 200, (name, response.text)
                continue
            assert response.status_code in (413, 415, 422), (name, response.status_code)
            detail = response.json()["detail"]
            assert isinstance(detail, str) and "Traceback" not in detail, (name, detail)


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "this PyTorch build has no CUDA"),
    (["--out", "/proc/medmoe-cannot-write"], "cannot be written"),
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["--fpr", "1.5"], "--fpr is a false-positive rate in (0, 1)"),
    (["--frame", "sideways"], "neither an index"),
])
def test_cli_misuse_is_one_line_and_a_usage_exit_code(tiny_run: Path, tmp_path: Path, args: list[str],
                                                      message: str, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from medmoe.cli import main

    image = tmp_path / "x.png"
    _png(image, (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    base = {"--out": str(tmp_path / "out"), "--model": str(tiny_run), "--task": "brain_mri"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    monkeypatch.setattr(sys, "argv", ["medmoe", "detect", str(image), *[x for kv in base.items() for x in kv],
                                      "--no-progress"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main()
    output = capsys.readouterr()
    assert info.value.code == 2, output
    assert message in output.out + output.err and "Traceback" not in output.err


UNWRITABLE = "/proc/medmoe-cannot-write"  # nothing can be created under /proc, not even by root


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "add-task", "prepare", "detect"])
def test_every_command_checks_its_output_before_the_work(command: str, tiny_run: Path, phantoms: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from medmoe.cli import main

    images = phantoms / "brain_mri" / "test"
    args = {
        "train": ["train", "--data", str(phantoms), "--out", f"{UNWRITABLE}/run", "--epochs", "1"],
        "evaluate": ["evaluate", str(tiny_run), "--out", f"{UNWRITABLE}/metrics.json"],
        "export": ["export", "--model", str(tiny_run), "--out", f"{UNWRITABLE}/model.onnx"],
        "add-task": ["add-task", "--model", str(tiny_run), "--task", "knee_mri", "--prompt", "Knee MRI slice.",
                     "--data", str(images), "--out", f"{UNWRITABLE}/run"],
        "prepare": ["prepare", "folder", "--root", str(tmp_path), "--task", "head_ct", "--out", f"{UNWRITABLE}/m.csv"],
        "detect": ["detect", str(images), "--task", "brain_mri", "--model", str(tiny_run), "--out", UNWRITABLE],
    }[command]
    monkeypatch.setattr(sys, "argv", ["medmoe", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main()
    output = capsys.readouterr()
    assert info.value.code == 2 and "Traceback" not in output.err
    assert f"--out '{UNWRITABLE}" in output.err and "cannot be written" in output.err and "choose a folder" in output.err


def test_a_model_that_fails_to_load_leaves_no_output_folder(tmp_path: Path, phantoms: Path) -> None:
    out = tmp_path / "new" / "out"
    done = CliRunner().invoke(cli_app, ["detect", str(phantoms / "brain_mri" / "test"), "--task", "brain_mri", "--model",
                                        str(tmp_path / "no-such-run"), "--out", str(out), "--no-progress"])
    assert done.exit_code != 0 and "no checkpoint" in str(done.exception or done.output)
    assert not (tmp_path / "new").exists()


def test_resume_refuses_results_of_another_model(tiny_run: Path, phantoms: Path, tmp_path: Path) -> None:
    from api_fixtures import brain_images, save_tiny_model

    other = save_tiny_model(tmp_path / "other", hallucination=False)
    out = tmp_path / "out"
    image = brain_images(phantoms)[0]
    first = CliRunner().invoke(cli_app, ["detect", str(image), "--task", "brain_mri", "--model", str(tiny_run),
                                         "--out", str(out), "--no-progress", "--no-overlays"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli_app, ["detect", str(image), "--task", "brain_mri", "--model", str(other),
                                         "--out", str(out), "--no-progress", "--resume"])
    assert "written by another model" in str(again.exception) and "choose a new --out" in str(again.exception)
