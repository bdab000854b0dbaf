"""Trust outputs: conformal p-values and thresholds, the α warning, scope (task resemblance, out of
scope) on phantoms, and a checkpoint calibrated after training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from typer.testing import CliRunner

from api_fixtures import phantom_batch, save_tiny_model
from medmoe import Detector
from medmoe.cli import app as cli_app
from medmoe.data.transforms import preprocess_image
from medmoe.engine.checkpoint import META_NAME
from medmoe.engine.trust_fitting import calibrate, fit_scope, scope_distances
from medmoe.model.config import ModelConfig
from medmoe.model.registry import create_model
from medmoe.tasks import default_registry
from medmoe.trust import TrustCalibration, assess, decision_threshold, p_values, smallest_p
from serve_fixtures import tiny_model


def test_p_values_on_known_scores() -> None:
    reference = np.array([4.0, 1.0, 3.0, 2.0])
    got = p_values(reference, np.array([0.0, 2.5, 3.0, 4.0, 5.0]))
    np.testing.assert_allclose(got, [5 / 5, 3 / 5, 3 / 5, 2 / 5, 1 / 5])  # (1 + #{v ≥ s}) / (n + 1); ties count
    assert smallest_p(9) == pytest.approx(0.1)


@pytest.mark.parametrize("n, alpha", [(99, 0.05), (99, 0.01), (134, 0.05), (10, 0.2), (9, 0.05)])
def test_threshold_and_p_value_decide_alike(n: int, alpha: float) -> None:
    rng = np.random.default_rng(n)
    reference = rng.normal(size=n)
    threshold, level = decision_threshold(reference, alpha)
    assert level == max(alpha, 1 / (n + 1))
    scores = np.concatenate([rng.normal(size=2000), reference])  # ties with the reference included
    np.testing.assert_array_equal(scores > threshold, p_values(reference, scores) <= level)
    if alpha < 1 / (n + 1):
        assert threshold == reference.max()


def test_false_positive_rate_is_controlled_on_exchangeable_normals() -> None:
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):  # the guarantee is over draws of the calibration set too
        reference, normals = rng.gamma(2.0, size=99), rng.gamma(2.0, size=500)
        rates.append(np.mean(p_values(reference, normals) <= 0.05))
    assert 0.04 <= np.mean(rates) <= 0.05 + 0.004  # E[FPR] = ⌊α(n + 1)⌋ / (n + 1) = 0.05 exactly here


def _calibration(n: int) -> TrustCalibration:
    return TrustCalibration(scores={"a": sorted(np.linspace(0, 1, n).tolist())}, scope_scale={"a": 1.0, "b": 1.0},
                            scope_limit=2.0, source="validation normals")


def test_an_unreachable_rate_is_said_and_replaced() -> None:
    few = assess(_calibration(9), ["a", "b"], "a", 0.5, 0.05, None)
    assert few.fpr == pytest.approx(0.1) and "below the smallest p-value" in few.notes[0]
    assert few.threshold == 1.0 and few.p_value == pytest.approx(6 / 10)  # 0.5 … 1: five of nine ≥ 0.5
    enough = assess(_calibration(99), ["a", "b"], "a", 0.999, 0.05, None)
    assert enough.fpr == 0.05 and enough.notes == () and enough.p_value == pytest.approx(2 / 100)
    assert "more unusual than 98 of 99 normal 'a'" in enough.explanation
    with pytest.raises(ValueError, match="false-positive rate"):
        assess(_calibration(9), ["a", "b"], "a", 0.5, 0.0, None)


def test_resemblance_and_scope_from_distances() -> None:
    calibration = _calibration(20)
    # squared distances; normalised = sqrt(d) / scale, limit 2
    near_b = assess(calibration, ["a", "b"], "a", 0.5, 0.05, np.array([9.0, 1.0]))
    assert (near_b.resembles, near_b.prompt_mismatch, near_b.out_of_scope) == ("b", True, False)
    assert "looks like 'b', not 'a'" in near_b.notes[0]
    far = assess(calibration, ["a", "b"], "a", 0.5, 0.05, np.array([25.0, 16.0]))
    assert (far.resembles, far.prompt_mismatch, far.out_of_scope) == (None, False, True)
    right = assess(calibration, ["a", "b"], "a", 0.5, 0.05, np.array([1.0, 9.0]))
    assert (right.resembles, right.prompt_mismatch, right.out_of_scope, right.notes) == ("a", False, False, ())


def test_an_out_of_scope_verdict_on_few_calibration_normals_says_so() -> None:
    few = _calibration(9)  # nine normals of 'a', none of 'b'
    assert few.scope_caveat("a").startswith("the typical distance of 'a' rests on 9 calibration normals and the limit on 9")
    far = assess(few, ["a", "b"], "a", 0.5, 0.05, np.array([25.0, 16.0]))  # nearest: 'b', 4 × its scale
    assert far.out_of_scope and far.notes[-1].startswith("out of scope: the image resembles none")
    assert "image (but the typical distance of 'b' rests on 0 calibration normals and the limit" in far.notes[-1]
    near = assess(few, ["a", "b"], "a", 0.5, 0.05, np.array([1.0, 9.0]))
    assert not any("calibration normals and" in n for n in near.notes)  # an in-scope verdict carries no caveat
    plenty = TrustCalibration(scores={"a": list(np.linspace(0, 1, 90)), "b": list(np.linspace(0, 1, 10))},
                              scope_scale={"a": 1.0, "b": 1.0}, scope_limit=2.0, source="validation normals")
    assert plenty.scope_caveat("a") == plenty.scope_caveat("b") == ""
    assert assess(plenty, ["a", "b"], "a", 0.5, 0.05, np.array([25.0, 16.0])).notes[-1].endswith("so check that it is a 'a' image")
    one_short = TrustCalibration(scores={"a": list(np.linspace(0, 1, 91)), "b": list(np.linspace(0, 1, 9))},
                                 scope_scale={"a": 1.0, "b": 1.0}, scope_limit=2.0, source="validation normals")
    assert one_short.scope_caveat("a") == ""
    assert one_short.scope_caveat("b").startswith("the typical distance of 'b' rests on 9 calibration normals, so")


def _natural(resolution: int) -> torch.Tensor:
    images = [skdata.astronaut() / 255.0, skdata.camera() / 255.0, skdata.coffee() / 255.0, skdata.text() / 255.0,
              np.random.default_rng(0).random((128, 128))]
    return torch.from_numpy(np.stack([preprocess_image(np.asarray(i, np.float32), 1, resolution) for i in images]))


def test_scope_head_tells_phantom_tasks_apart_and_flags_natural_images() -> None:
    """A pixel model's scope head (its own frozen trunk) on 48×48 phantoms at 64×64: held-out phantoms
    resemble their own task, photos and noise resemble none."""
    config = ModelConfig(resolution=64)
    model = create_model(config).eval()
    ids = default_registry().ids
    train_x, train_t = phantom_batch(64, 16, seed=1)
    calib_x, calib_t = phantom_batch(64, 16, seed=2)
    test_x, test_t = phantom_batch(64, 10, seed=3)
    head = fit_scope(model, config, train_x, train_t, len(ids))
    calibration = calibrate(model, config, head, ids, calib_x, calib_t, np.zeros(len(calib_t)),
                            train_inputs=train_x, train_task_indices=train_t)
    held_out = calibration.normalised(ids, scope_distances(model, config, head, test_x))
    assert np.mean(held_out.argmin(axis=1) == test_t.numpy()) >= 0.95
    assert np.mean(held_out.min(axis=1) > calibration.scope_limit) <= 0.1
    natural = calibration.normalised(ids, scope_distances(model, config, head, _natural(64)))
    assert (natural.min(axis=1) > calibration.scope_limit).all()


def test_a_run_without_trust_outputs_still_works_and_says_so(tmp_path: Path) -> None:
    run = save_tiny_model(tmp_path / "old", calibrated=False)
    result = Detector.load(run).predict(np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40), task="brain_mri")
    assert math.isnan(result.p_value) and not result.out_of_scope and result.threshold == 0.05
    assert "medmoe calibrate" in result.warnings[0] and result.to_dict()["p_value"] is None
    assert "trust" not in json.loads((run / META_NAME).read_text())


def test_calibrate_command_reproduces_what_training_fitted(tmp_path_factory: pytest.TempPathFactory,
                                                           tmp_path: Path) -> None:
    import shutil

    root = tiny_model(tmp_path_factory)
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    trained = json.loads((run / META_NAME).read_text())
    stripped = {k: v for k, v in trained.items() if k != "trust"}
    (run / META_NAME).write_text(json.dumps(stripped))
    assert math.isnan(Detector.load(run).predict(np.full((40, 40), 0.5, np.float32), task="brain_mri").p_value)
    done = CliRunner().invoke(cli_app, ["calibrate", "--model", str(run), "--manifest", str(root / "manifest.csv"),
                                     "--no-progress"])
    assert done.exit_code == 0, done.output
    again = json.loads((run / META_NAME).read_text())
    assert again["trust"]["scores"] == trained["trust"]["scores"]
    assert again["trust"]["scope_limit"] == pytest.approx(trained["trust"]["scope_limit"], rel=1e-5)
    assert "calibrated" in done.output and "validation normals" in done.output
