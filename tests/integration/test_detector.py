"""Detector: loading, preprocessing parity with training, prompts and tasks, DICOM hints, results, overlays."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import medmoe.text.cache
from api_fixtures import brain_images
from medmoe import Detector
from medmoe.api import MIN_SIMILARITY, DetectionResult, PromptWarning
from medmoe.api.prompt_matching import suggest_task
from medmoe.api.render import overlay_png, render_result
from medmoe.api.results import field_docs
from medmoe.data.transforms import preprocess_image
from medmoe.engine.checkpoint import load_checkpoint
from medmoe.errors import CheckpointError, ImageReadError, PromptError
from medmoe.io import read_image
from medmoe.tasks import Task, default_registry

RG1 = pydicom.data.get_testdata_file("RG1_UNCR.dcm", download=False)  # CR chest, MONOCHROME1 (pydicom-data)
CT_SMALL = pydicom.data.get_testdata_file("CT_small.dcm", download=False)  # CT, no BodyPartExamined


@pytest.fixture(scope="module")
def detector(tiny_run: Path) -> Detector:
    return Detector.load(tiny_run)


@pytest.fixture
def gray_png(tmp_path: Path) -> Path:
    """A 40×56 (H×W) 8-bit gray PNG: not square, not the model's size."""
    pixels = (np.add.outer(np.arange(40), np.arange(56)) * 2 % 256).astype(np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(pixels).save(path)
    return path


def _model_outputs(run: Path, image: np.ndarray, embedding: np.ndarray) -> tuple[float, np.ndarray]:
    """Score and router weights of the raw torch model on an already preprocessed image."""
    model = load_checkpoint(run).model
    with torch.no_grad():
        out = model(torch.from_numpy(image)[None], torch.from_numpy(embedding)[None])
    return float(out.score[0]), out.router_weights[0].numpy()


# --- preprocessing and results ---------------------------------------------------------------------


def test_preprocessing_is_training_preprocessing_and_torch_free_resize_matches_torch(gray_png: Path) -> None:
    decoded = read_image(gray_png)
    ours = preprocess_image(decoded, 1, 32)
    reference = F.interpolate(torch.from_numpy(decoded)[None, None], size=(32, 32), mode="bilinear",
                              align_corners=False, antialias=True)[0].clamp(0, 1).numpy()
    assert ours.shape == (1, 32, 32) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


def test_predict_a_file_with_a_task(detector: Detector, tiny_run: Path, gray_png: Path) -> None:
    result = detector.predict(gray_png, task="brain_mri")
    assert isinstance(result, DetectionResult)
    assert result.task == "brain_mri" and result.prompt == "Brain MRI slice." and result.prompt_similarity == 1.0
    # a flat gray rectangle resembles none of the tasks' normals: said beside the decision, which stands
    assert result.source == str(gray_png) and result.out_of_scope and result.resembles is None
    assert len(result.warnings) == 1 and "resembles none of the trained tasks" in result.warnings[0]
    assert result.decision == ("anomalous" if result.score > result.threshold else "normal")
    assert result.scope_distance > result.scope_limit > 0
    assert (result.model, result.model_sha256) == (tiny_run.name, detector.spec.weights_sha256[:12])
    assert result.image.shape == result.anomaly_map.shape == result.hallucination_map.shape == (40, 56)
    assert (result.anomaly_map >= 0).all() and (result.hallucination_map >= 0).all()
    assert result.threshold == detector.spec.calibration.threshold("brain_mri", 0.05)[0]
    assert result.is_anomalous == (result.score > result.threshold) == (result.p_value <= result.fpr)
    # exactly what the network gives for the training preprocessing of this file
    stored = detector.spec.prompt_embeddings[detector.tasks.index("brain_mri")]
    score, weights = _model_outputs(tiny_run, preprocess_image(read_image(gray_png), 1, 32), stored)
    assert result.score == pytest.approx(score, rel=1e-6)
    np.testing.assert_allclose(result.expert_weights, weights, rtol=1e-6)
    assert (result.expert_weights > 0).sum() == 2 and result.expert_weights.sum() == pytest.approx(1.0)
    (first, w1), (second, w2) = result.top_experts(2)
    assert w1 >= w2 > 0 and w1 == result.expert_weights.max() and first != second


def test_to_dict_is_json_without_arrays(detector: Detector, gray_png: Path) -> None:
    data = detector.predict(gray_png, task="head_ct").to_dict()
    text = json.dumps(data, allow_nan=False)  # head_ct has no threshold: None, not NaN
    assert data["threshold"] is None and data["p_value"] is None and data["is_anomalous"] is False
    assert data["decision"] == "undetermined" and data["out_of_scope"] is True  # a flat gray rectangle
    assert (data["height"], data["width"]) == (40, 56) and len(data["expert_weights"]) == 5
    assert list(data) == list(field_docs())  # the record's fields, in order
    assert "anomaly_map" not in text and any("no threshold" in w for w in data["warnings"])


def test_arrays_are_accepted_like_files(detector: Detector, gray_png: Path) -> None:
    pixels = np.asarray(Image.open(gray_png))
    from_file = detector.predict(gray_png, task="brain_mri")
    from_uint8 = detector.predict(pixels, task="brain_mri")
    from_float = detector.predict(pixels / 255.0, task="brain_mri")
    assert from_uint8.source is None
    assert from_uint8.score == pytest.approx(from_file.score, rel=1e-6)
    assert from_float.score == pytest.approx(from_file.score, rel=1e-5)
    rgb = detector.predict(np.repeat(pixels[..., None], 3, axis=2), task="brain_mri")
    assert rgb.image.shape == (40, 56, 3) and rgb.score == pytest.approx(from_file.score, rel=1e-5)
    assert rgb.anomaly_map.shape == (40, 56)
    for bad, message in ((np.zeros((4, 4, 2)), "shape"), (np.full((4, 4), 2.0), r"\[0, 1\]"),
                         (np.zeros((4, 4), np.int64), "pixel type")):
        with pytest.raises(ImageReadError, match=message):
            detector.predict(bad, task="brain_mri")
    with pytest.raises(ImageReadError, match="files, not arrays"):
        detector.predict(pixels, task="brain_mri", frame=0)


def test_a_tasks_training_window_is_the_default_for_dicom_and_nifti(tiny_run: Path, tmp_path: Path) -> None:
    import nibabel as nib

    from medmoe.tasks import TaskRegistry

    hu = np.tile(np.linspace(-200.0, 300.0, 40, dtype=np.float32), (40, 1))
    nib.save(nib.Nifti1Image(hu[:, :, None], np.eye(4)), tmp_path / "ct.nii.gz")
    png = tmp_path / "ct.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(png)
    plain = Detector.load(tiny_run)
    windowed = Detector.load(tiny_run)
    windowed.tasks = TaskRegistry(Task.from_dict({**t.to_dict(), "window": "brain"}) if t.id == "head_ct" else t
                                  for t in plain.tasks)  # as a tasks file with `window: brain` trains it
    by_task = windowed.predict(tmp_path / "ct.nii.gz", task="head_ct")
    assert by_task.score == plain.predict(tmp_path / "ct.nii.gz", task="head_ct", window="brain").score
    assert by_task.score != plain.predict(tmp_path / "ct.nii.gz", task="head_ct").score  # min-max without it
    assert windowed.predict(tmp_path / "ct.nii.gz", task="head_ct", window=(0, 400)).score == \
        plain.predict(tmp_path / "ct.nii.gz", task="head_ct", window=(0, 400)).score  # an explicit one wins
    assert windowed.predict(png, task="head_ct").score == plain.predict(png, task="head_ct").score  # raster: none


def test_predict_batch_matches_single_predictions_and_keeps_order(detector: Detector, phantoms: Path) -> None:
    files = brain_images(phantoms)
    batched = detector.predict_batch(files, task="brain_mri", batch_size=3)
    assert [r.source for r in batched] == [str(f) for f in files]
    singles = [detector.predict(f, task="brain_mri").score for f in files]
    np.testing.assert_allclose([r.score for r in batched], singles, rtol=1e-5)
    assert len({round(s, 9) for s in singles}) == len(files)  # different images, different scores


def test_predict_batch_return_errors_keeps_bad_files_in_place(detector: Detector, phantoms: Path,
                                                              tmp_path: Path) -> None:
    good = brain_images(phantoms)[:2]
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match="missing.png"):
        detector.predict_batch([good[0], missing], task="brain_mri")
    out = detector.predict_batch([good[0], missing, good[1]], task="brain_mri", batch_size=2, return_errors=True)
    assert isinstance(out[0], DetectionResult) and isinstance(out[2], DetectionResult)
    assert isinstance(out[1], ImageReadError) and out[1].path == str(missing)
    with pytest.raises(ValueError, match="batch_size"):
        detector.predict_batch(good, task="brain_mri", batch_size=0)


def test_unreadable_file_names_the_file(detector: Detector, tmp_path: Path) -> None:
    bad = tmp_path / "scan.png"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="scan.png"):
        detector.predict(bad, task="brain_mri")


# --- prompts and tasks ------------------------------------------------------------------------------


def test_free_text_prompt_is_routed_with_its_own_embedding(detector: Detector, tiny_run: Path,
                                                           gray_png: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sensible prompt raises no warning
        result = detector.predict(gray_png, prompt="axial brain MRI")
    assert result.task == "brain_mri" and result.prompt == "axial brain MRI"
    assert MIN_SIMILARITY < result.prompt_similarity < 0.99
    assert [w for w in result.warnings if "resembles none" not in w] == []  # gray.png is out of scope
    assert result.threshold == detector.spec.calibration.threshold("brain_mri", 0.05)[0]
    image = preprocess_image(read_image(gray_png), 1, 32)
    own = detector._matcher.embed("axial brain MRI")
    score, weights = _model_outputs(tiny_run, image, own)
    assert result.score == pytest.approx(score, rel=1e-6)
    np.testing.assert_allclose(result.expert_weights, weights, rtol=1e-6)
    by_task = detector.predict(gray_png, task="brain_mri")
    assert not np.allclose(result.expert_weights, by_task.expert_weights)  # the router saw the prompt


def test_match_prompt(detector: Detector) -> None:
    match = detector.match_prompt("  CXR ")
    assert match.task == "chest_xray" and match.expanded_text == "chest X-ray" and match.is_confident
    own = detector.match_prompt("Head CT slice.")
    assert own.task == "head_ct" and own.similarity == pytest.approx(1.0, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weak = detector.match_prompt("photo of a cat")  # asking is not predicting: no warning
    assert not weak.is_confident and weak.similarity < MIN_SIMILARITY


def test_unrelated_prompt_warns_or_fails_in_strict_mode(detector: Detector, gray_png: Path) -> None:
    with pytest.warns(PromptWarning, match="photo of a cat") as caught:
        result = detector.predict(gray_png, prompt="photo of a cat")
    assert caught[0].filename == __file__  # the warning points at the caller
    assert "resembles no trained task" in result.warnings[0] and "'unsure_prompt' (prompts are English)" in result.warnings[0]
    # an untrusted prompt gives no unqualified decision: the score and p-value are stated, the decision says why not
    assert result.decision == "unsure_prompt" and not result.is_anomalous and not result.prompt_trusted
    assert result.to_dict()["decision"] == "unsure_prompt" and result.to_dict()["is_anomalous"] is False
    for prompt in ("asdf qwerty", "knee MRI", "IRM cérébrale"):
        with pytest.warns(PromptWarning):
            assert detector.predict(gray_png, prompt=prompt).decision == "unsure_prompt", prompt
    trusted = detector.predict(gray_png, prompt="Brain MRI slice.")
    assert trusted.prompt_trusted and trusted.decision in ("anomalous", "normal")
    with pytest.raises(PromptError, match="resembles no trained task"):
        detector.predict(gray_png, prompt="photo of a cat", strict=True)
    with pytest.warns(PromptWarning):
        detector.predict_batch([gray_png], prompt="a red car")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": ""}, "empty"),
    ({"prompt": "   "}, "empty"),
    ({"prompt": "Brain MRI slice.", "task": "brain_mri"}, "not both"),
    ({"task": "knee_mri"}, "unknown task 'knee_mri'.*brain_mri"),
    ({}, "no prompt or task given"),
])
def test_prompt_and_task_errors(detector: Detector, gray_png: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        detector.predict(gray_png, **kwargs)


def test_trained_prompts_and_tasks_never_load_the_text_model(detector: Detector, gray_png: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(spec: str) -> None:
        raise AssertionError(f"the text model {spec} was loaded")

    monkeypatch.setattr(medmoe.text.cache, "build_text_encoder", refuse)
    fresh = Detector(detector.backend)  # an empty prompt cache apart from the stored embeddings
    assert fresh.predict(gray_png, prompt=" Brain  MRI slice. ").prompt_similarity == pytest.approx(1.0, abs=1e-5)
    assert fresh.predict(gray_png, task="fundus").task == "fundus"


def test_prompt_free_model_needs_a_task_only_for_the_threshold(plain_run: Path, gray_png: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Detector.load(plain_run)
    assert plain.spec.prompt_embeddings is None and not plain.spec.uses_prompt
    result = plain.predict(gray_png, prompt="chest radiograph")
    assert result.task == "chest_xray" and result.hallucination_map is None
    same_image = plain.predict(gray_png, task="brain_mri")
    assert same_image.score == pytest.approx(result.score, rel=1e-6)  # the prompt does not reach the network
    monkeypatch.setattr(medmoe.text.cache, "build_text_encoder", lambda spec: pytest.fail("text model loaded"))
    assert Detector.load(plain_run).predict(gray_png, task="fundus").task == "fundus"


# --- DICOM task suggestion ----------------------------------------------------------------------------


def test_dicom_without_prompt_gets_its_task_from_tags(detector: Detector) -> None:
    result = detector.predict(RG1)
    assert result.task == "chest_xray" and result.prompt == default_registry()["chest_xray"].prompt
    assert result.image.shape == result.anomaly_map.shape == (1955, 1841)
    assert any("suggested from DICOM tags (Modality=CR, BodyPartExamined=CHEST)" in w for w in result.warnings)
    with pytest.raises(PromptError, match="do not say the body part"):  # a CT without a body part: any organ
        detector.predict(CT_SMALL)
    assert detector.predict(CT_SMALL, task="head_ct").task == "head_ct"


def test_suggest_task_rules() -> None:
    tasks = default_registry()
    assert suggest_task({"Modality": "MR", "BodyPartExamined": "HEAD"}, tasks).id == "brain_mri"
    assert suggest_task({"Modality": "dx", "BodyPartExamined": "chest"}, tasks).id == "chest_xray"
    with pytest.raises(PromptError, match="do not say the body part"):
        suggest_task({"Modality": "DX", "BodyPartExamined": ""}, tasks)
    with pytest.raises(PromptError, match="match none"):  # a shoulder MR is not a brain MRI
        suggest_task({"Modality": "MR", "BodyPartExamined": "SHOULDER"}, tasks)
    with pytest.raises(PromptError, match="Modality=CT, BodyPartExamined=CHEST"):
        suggest_task({"Modality": "CT", "BodyPartExamined": "CHEST"}, tasks)  # a chest CT is not head_ct
    with pytest.raises(PromptError, match="match none"):
        suggest_task({"Modality": "PT", "BodyPartExamined": ""}, tasks)
    twice = tasks.subset(tasks.ids)
    twice.add(Task("sinus_ct", "sinus", "CT", "Sinus CT slice.", dicom_modalities=("CT",)))
    assert suggest_task({"Modality": "CT", "BodyPartExamined": ""}, twice).id == "sinus_ct"  # lists no body part
    twice.add(Task("spine_ct", "spine", "CT", "Spine CT slice.", dicom_modalities=("CT",)))
    with pytest.raises(PromptError, match="several tasks"):
        suggest_task({"Modality": "CT", "BodyPartExamined": ""}, twice)


# --- loading -------------------------------------------------------------------------------------------


def test_load_errors(tmp_path: Path, tiny_run: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Detector.load(tmp_path)
    with pytest.raises(CheckpointError, match="unknown backend"):
        Detector.load(tiny_run, backend="tensorflow")
    with pytest.raises(CheckpointError, match="no .onnx file"):
        Detector.load(tmp_path, backend="onnx")
    with pytest.raises(CheckpointError, match="backend='onnx'"):
        Detector.load(tmp_path / "model.onnx")


# --- overlays ------------------------------------------------------------------------------------------


def test_overlay_png(detector: Detector, gray_png: Path) -> None:
    result = detector.predict(gray_png, task="brain_mri")
    png = render_result(result)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 300 and image.height > 150
    without_threshold = overlay_png(result.image, result.anomaly_map, title="t", threshold=math.nan)
    assert without_threshold != overlay_png(result.image, result.anomaly_map, title="t", threshold=0.05)
    with pytest.raises(ValueError, match="same"):
        overlay_png(result.image, result.anomaly_map[:10], title="t")


def test_the_overlay_tints_only_what_nears_the_threshold_and_outlines_what_passes_it() -> None:
    image = np.full((200, 300), 0.5, np.float32)  # mid gray
    amap = np.zeros((200, 300), np.float32)
    amap[60:140, 100:200] = 1.0  # a lesion above the threshold; the rest of the map far below it
    drawn = np.asarray(Image.open(io.BytesIO(overlay_png(image, amap, title="t", threshold=0.4))).convert("RGB"))
    drawn = drawn.astype(int)[:, :600]  # the image, not the colour bar
    gray = np.abs(drawn - drawn[..., :1]).max(axis=2) <= 2  # R = G = B: untinted
    height, width = drawn.shape[:2]
    # scale the lesion box from the image's pixels to the drawing's (6 inches at 100 dpi, below a title)
    left, right = int(0.05 * width), int(0.95 * width)
    assert gray[int(0.9 * height), left:right].mean() > 0.95  # far below the threshold: the image as it is
    centre = drawn[int(0.45 * height), int(0.5 * width)]
    assert np.ptp(centre) > 40  # the lesion is tinted
    white = (drawn > 235).all(axis=2)
    inside = white[int(0.2 * height):int(0.9 * height), int(0.2 * width):int(0.8 * width)]  # no background here
    assert inside.sum() > 100  # the outline of the region above the threshold


def test_a_colour_image_stays_in_colour_on_its_overlay(detector: Detector) -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[..., 0] = 200  # a red photo: gray would lose what a fundus photo shows in colour
    rgb[20:40, 30:50, 1] = 120
    result = detector.predict(rgb, task="fundus")
    assert result.image.shape == (60, 80, 3) and result.anomaly_map.shape == (60, 80)
    drawn = np.asarray(Image.open(io.BytesIO(render_result(result))).convert("RGB")).astype(int)[:, :600]  # not the bar
    untinted = drawn[(drawn[..., 0] > 150) & (drawn[..., 1] < 40) & (drawn[..., 2] < 40)]
    assert len(untinted) > 500  # the photo's own red, where the map stays clear, is on the overlay
