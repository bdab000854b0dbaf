"""``medmoe detect``: files, folders, DICOM task hints, bad files, outputs, exit codes."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image

from api_fixtures import brain_images, run_cli
from medmoe.api.inputs import collect_inputs
from medmoe.api.results_csv import COLUMNS

RG1 = pydicom.data.get_testdata_file("RG1_UNCR.dcm", download=False)  # CR chest, MONOCHROME1 (pydicom-data)


def read_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return {Path(row["source"]).name: row for row in reader}


def test_dicom_chest_radiograph_without_prompt(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    code, output = run_cli([RG1, "--model", str(tiny_run), "--out", str(out), "--no-progress", "--maps"], capsys,
                           monkeypatch)
    assert code == 0, output
    row = read_rows(out)["RG1_UNCR.dcm"]
    # a real radiograph is out of the scope of a model calibrated on phantoms: said beside the decision,
    # with its distance, and the decision still stated
    assert row["task"] == "chest_xray" and row["error"] == "" and row["decision"] in ("anomalous", "normal")
    assert row["out_of_scope"] == "true" and row["score"] != "" and float(row["p_value"]) > 0
    assert float(row["scope_distance"]) > float(row["scope_limit"]) > 0
    assert row["is_anomalous"] == str(row["decision"] == "anomalous").lower()
    assert Path(row["source"]).is_absolute() and row["model"] == tiny_run.name and len(row["model_sha256"]) == 12
    assert "suggested from DICOM tags (Modality=CR, BodyPartExamined=CHEST)" in row["warnings"]
    assert "suggested from DICOM tags" in output and "scored 1 of 1" in output
    assert row["overlay"] == "RG1_UNCR_overlay.png" and row["maps"] == "RG1_UNCR_maps.npz"
    assert Image.open(out / row["overlay"]).format == "PNG"
    with np.load(out / row["maps"]) as maps:
        assert maps["anomaly_map"].shape == maps["hallucination_map"].shape == (1955, 1841)
        assert maps["anomaly_map"].dtype == np.float16  # compressed, 3 significant digits
        assert float(row["score"]) == pytest.approx(float(maps["anomaly_map"].mean()), rel=0.05)


def _mixed_folder(root: Path, phantoms: Path) -> Path:
    """Good phantoms (one in a subfolder) and three broken files."""
    folder = root / "mixed"
    (folder / "sub").mkdir(parents=True)
    good = brain_images(phantoms)
    shutil.copy(good[0], folder / "a.png")
    shutil.copy(good[-1], folder / "sub" / "b.png")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(jpeg, format="JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:200])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("a text file renamed .png\n")
    (folder / "readme.txt").write_text("not an image: skipped, not reported\n")
    return folder


def test_folder_with_good_and_broken_files(tiny_run: Path, phantoms: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _mixed_folder(tmp_path, phantoms)
    out = tmp_path / "out"
    code, output = run_cli([str(folder), "--task", "brain_mri", "--model", str(tiny_run), "--out", str(out),
                            "--batch-size", "2", "--no-progress", "--maps"], capsys, monkeypatch)
    assert code == 1
    rows = read_rows(out)
    assert set(rows) == {"a.png", "b.png", "truncated.jpg", "empty.png", "notes.png"}
    for name in ("a.png", "b.png"):
        assert rows[name]["error"] == "" and rows[name]["task"] == "brain_mri" and rows[name]["score"]
        (first, w1), (second, w2) = (part.split() for part in rows[name]["top_experts"].split(", "))
        assert float(w1) >= float(w2) > 0 and {first, second} <= {f"E{i}" for i in range(1, 6)}  # numbered from 1
        weights = [float(w) for w in rows[name]["expert_weights"].split()]
        assert len(weights) == 5 and weights[int(first[1:]) - 1] == pytest.approx(float(w1), abs=1e-3)
    assert (out / "a_overlay.png").is_file() and (out / "sub" / "b_overlay.png").is_file()
    assert rows["b.png"]["overlay"] == "sub/b_overlay.png" and (out / "sub" / "b_maps.npz").is_file()
    assert "empty (0 bytes)" in rows["empty.png"]["error"]
    assert "truncated, corrupt" in rows["truncated.jpg"]["error"] and "truncated, corrupt" in rows["notes.png"]["error"]
    assert all(rows[n]["score"] == "" and rows[n]["decision"] == "" for n in ("truncated.jpg", "empty.png", "notes.png"))
    assert not list(out.glob("empty*")) and not list(out.glob("notes*"))
    assert "3 file(s) could not be scored" in output and "empty (0 bytes)" in output and "scored 2 of 5" in output


def test_neither_prompt_nor_task_for_png_is_a_per_file_error(tiny_run: Path, phantoms: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    image = brain_images(phantoms)[0]
    out = tmp_path / "out"
    code, _ = run_cli([str(image), RG1, "--model", str(tiny_run), "--out", str(out), "--no-progress",
                       "--no-overlays", "--maps"], capsys, monkeypatch)
    assert code == 1
    rows = read_rows(out)
    assert "no prompt or task given" in rows[image.name]["error"]
    assert rows["RG1_UNCR.dcm"]["task"] == "chest_xray" and rows["RG1_UNCR.dcm"]["overlay"] == ""
    assert not list(out.glob("*_overlay.png")) and (out / "RG1_UNCR_maps.npz").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--prompt", "photo of a cat", "--strict"], "resembles no trained task"),
    (["--task", "knee_mri"], "unknown task 'knee_mri'"),
    (["--prompt", "x", "--task", "brain_mri"], "not both"),
    (["--task", "brain_mri", "--window", "40,x"], "CENTER,WIDTH"),
])
def test_usage_errors_exit_2_with_one_line(tiny_run: Path, phantoms: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                           extra: list[str], message: str) -> None:
    image = brain_images(phantoms)[0]
    code, output = run_cli([str(image), "--model", str(tiny_run), "--out", str(tmp_path / "out"), "--no-progress",
                            *extra], capsys, monkeypatch)
    assert code == 2 and message in output and "Traceback" not in output
    assert not (tmp_path / "out" / "results.csv").exists()


def test_no_images_found(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    code, output = run_cli([str(tmp_path / "docs"), "--model", str(tiny_run), "--out", str(tmp_path / "o")],
                           capsys, monkeypatch)
    assert code == 2 and "no image files" in output


def test_collect_inputs_names_are_unique_and_skip_output_and_hidden(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "results").mkdir(parents=True)
    (data / ".hidden").mkdir()
    for name in ("x.png", "x.jpg", "vol.nii.gz", "results/old_overlay.png", ".hidden/y.png", "z.txt"):
        (data / name).write_bytes(b"\x89PNG")
    (data / "NOSUFFIX").write_bytes(b"\0" * 128 + b"DICM")
    inputs = collect_inputs([data, data / "x.png", tmp_path / "missing.png"], exclude=data / "results").items
    assert [(i.path.relative_to(tmp_path).as_posix(), i.name) for i in inputs] == [
        ("data/NOSUFFIX", "NOSUFFIX"), ("data/vol.nii.gz", "vol"), ("data/x.jpg", "x"), ("data/x.png", "x_2"),
        ("data/x.png", "x_3"), ("missing.png", "missing"),
    ]


def test_frame_all_scores_every_frame_and_mixed_folders_ignore_the_choice(
        tiny_run: Path, phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    brain = brain_images(phantoms)[:3]
    pages = [Image.open(path) for path in brain]
    pages[0].save(data / "stack.tif", save_all=True, append_images=pages[1:])
    shutil.copy(brain[0], data / "single.png")
    out = tmp_path / "out"
    code, output = run_cli([str(data), "--model", str(tiny_run), "--out", str(out), "--task", "brain_mri",
                            "--frame", "all", "--slice", "middle", "--no-progress"], capsys, monkeypatch)
    assert code == 0, output
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(Path(r["source"]).name, r["frame"], r["slice"]) for r in rows] == [
        ("single.png", "", ""), ("stack.tif", "0", ""), ("stack.tif", "1", ""), ("stack.tif", "2", "")]
    assert [r["overlay"] for r in rows] == ["single_overlay.png", *(f"stack_frame{i:03d}_overlay.png" for i in range(3))]
    assert all(r["error"] == "" for r in rows) and "scored 4 of 4" in output
    assert float(rows[0]["score"]) == float(rows[1]["score"])  # page 0 is the single image
    assert len({r["score"] for r in rows[1:]}) == 3


def test_a_warning_about_many_frames_is_said_once_with_a_count(tiny_run: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cine = pydicom.data.get_testdata_file("emri_small.dcm", download=False)  # MR, 10 frames of 64 × 64
    code, output = run_cli([cine, "--model", str(tiny_run), "--out", str(tmp_path / "o"), "--task", "brain_mri",
                            "--frame", "all", "--no-progress"], capsys, monkeypatch)
    assert code == 0 and "scored 10 of 10" in output
    warned = [line for line in output.splitlines() if line.startswith("warning:")]
    assert warned and all("more image(s) like it" in line for line in warned), output
    assert len(warned) == len({line.split("(and")[0][:40] for line in warned})  # one line per kind


def test_broken_links_in_a_folder_are_reported_not_dropped(tiny_run: Path, phantoms: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(brain_images(phantoms)[0], data / "ok.png")
    (data / "dangling.png").symlink_to(tmp_path / "gone.png")
    (data / "loop.png").symlink_to(data / "loop.png")
    (data / "up").symlink_to(data)
    out = tmp_path / "out"
    code, output = run_cli([str(data), "--model", str(tiny_run), "--out", str(out), "--task", "brain_mri",
                            "--no-progress"], capsys, monkeypatch)
    rows = read_rows(out)
    assert code == 1 and rows["ok.png"]["error"] == ""
    assert "which does not exist" in rows["dangling.png"]["error"] and "a loop" in rows["loop.png"]["error"]
    assert "searched once" in output and "2 file(s) could not be scored" in output


def test_an_interrupt_keeps_what_was_scored(tiny_run: Path, phantoms: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from medmoe.api.detector import Detector

    real = Detector.predict_batch
    calls = []

    def interrupted_second_time(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "predict_batch", interrupted_second_time)
    out = tmp_path / "out"
    images = brain_images(phantoms)
    code, output = run_cli([*map(str, images), "--task", "brain_mri", "--model", str(tiny_run), "--out", str(out),
                            "--batch-size", "2", "--no-progress", "--workers", "0"], capsys, monkeypatch)
    assert code == 130 and "interrupted by signal 2: 2 of 4 image(s) have rows" in output and "--resume" in output
    rows = read_rows(out)
    assert len(rows) == 2 and all(r["score"] for r in rows.values())
    assert not list(out.glob("*_maps.npz"))  # maps are opt-in
    assert not (out / "results.partial.csv").exists()

    # --resume scores only the two images without a row, and keeps the first two rows as they were
    monkeypatch.setattr(Detector, "predict_batch", real)
    scored: list[int] = []
    monkeypatch.setattr(Detector, "predict_batch", lambda self, planes, *a, **k: scored.append(len(planes)) or real(self, planes, *a, **k))
    code, output = run_cli([*map(str, images), "--task", "brain_mri", "--model", str(tiny_run), "--out", str(out),
                            "--batch-size", "2", "--no-progress", "--workers", "0", "--resume"], capsys, monkeypatch)
    assert code == 0 and scored == [2] and "(2 from the earlier run)" in output, output
    resumed = read_rows(out)
    assert sorted(resumed) == sorted(p.name for p in images) and all(resumed[k] == v for k, v in rows.items())
    with open(out / "results.csv", encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) == 1 + len(images)  # each image once

    # a run into the same --out without --resume says it replaces the earlier results
    code, output = run_cli([str(images[0]), "--task", "brain_mri", "--model", str(tiny_run), "--out", str(out),
                            "--no-progress", "--workers", "0"], capsys, monkeypatch)
    assert code == 0 and "of an earlier run will be replaced; pass --resume" in " ".join(output.split())


def test_resume_with_other_images_keeps_the_earlier_runs_rows_and_errors(
        tiny_run: Path, phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out, broken = tmp_path / "out", tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    first, second = brain_images(phantoms)[:2]
    code, output = run_cli([str(first), str(broken), "--task", "brain_mri", "--model", str(tiny_run), "--out",
                            str(out), "--no-progress", "--workers", "0"], capsys, monkeypatch)
    assert code == 1, output
    code, output = run_cli([str(second), "--task", "brain_mri", "--model", str(tiny_run), "--out", str(out),
                            "--no-progress", "--workers", "0", "--resume"], capsys, monkeypatch)
    assert code == 1 and "1 file(s) could not be scored" in output, output  # results.csv still has the bad file
    rows = read_rows(out)
    assert set(rows) == {first.name, second.name, broken.name}
    assert rows["broken.png"]["error"] and rows[first.name]["score"] and rows[second.name]["score"]
