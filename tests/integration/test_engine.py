"""Training, resume, checkpoints and evaluation through the engine, on synthetic phantoms."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import fast_config, synthetic
from medmoe.engine.checkpoint import load_checkpoint, save_checkpoint
from medmoe.engine.config import load_config
from medmoe.engine.evaluate import collect, compute_metrics
from medmoe.engine.train import train
from medmoe.errors import CheckpointError, ConfigError
from medmoe.model.baselines.patchcore import MemorySettings, PatchCoreSettings
from medmoe.model.feature.settings import FeatureMoESettings
from medmoe.model.registry import architecture
from medmoe.report.evaluation_report import write_figures, write_report


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return synthetic(tmp_path_factory.mktemp("phantoms"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    train(fast_config(tmp, "train.epochs=2"), [data], tmp / "run", progress=False)
    return tmp / "run"


def test_training_writes_a_self_describing_checkpoint(trained: Path) -> None:
    meta = json.loads((trained / "model.json").read_text())
    assert meta["format"] == "medmoe-checkpoint"
    assert [t["id"] for t in meta["tasks"]] == ["chest_xray", "brain_mri", "fundus", "breast_us", "head_ct"]
    assert set(meta["thresholds"]) == set(meta["config"]["train"]["tasks"] or meta["thresholds"])
    assert all(v > 0 for v in meta["thresholds"].values())
    assert meta["config"]["model"]["text_dim"] == 384
    assert "validation" in meta["info"]["threshold_rule"]
    history = json.loads((trained / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert meta["info"]["best_epoch"] == min(history, key=lambda h: h["val_loss"])["epoch"]
    assert load_file(trained / "model.safetensors")["prompt_embeddings"].shape == (5, 384)
    assert not list(trained.rglob("*.tmp"))


def test_checkpoint_round_trip_gives_same_scores(trained: Path) -> None:
    ckpt = load_checkpoint(trained)
    assert not ckpt.model.training
    x = torch.rand(3, 1, 32, 32)
    e = ckpt.prompt_embeddings[torch.tensor([0, 2, 4])]
    before = ckpt.model(x, e).score
    save_checkpoint(trained.parent / "copy", model=ckpt.model, config=ckpt.config, tasks=ckpt.tasks,
                    prompt_embeddings=ckpt.prompt_embeddings, thresholds=ckpt.thresholds, info=ckpt.info)
    torch.testing.assert_close(load_checkpoint(trained.parent / "copy").model(x, e).score, before)


def test_wrong_checkpoints_fail_clearly(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.json").write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="not a medmoe checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.json").write_text((trained / "model.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path)


def test_a_model_from_a_newer_or_an_older_medmoe_says_what_to_do(trained: Path, tmp_path: Path) -> None:
    import shutil

    import medmoe

    for name in ("model.json", "model.safetensors"):
        shutil.copy(trained / name, tmp_path / name)
    meta = json.loads((trained / "model.json").read_text())
    meta["config"]["model"]["a_setting_of_the_future"] = 1  # what a newer medmoe might write
    for written_by, says in (("99.0.0", f"written by medmoe 99.0.0, newer than this medmoe {medmoe.__version__}"),
                             ("0.1.0", "is an invalid checkpoint")):
        (tmp_path / "model.json").write_text(json.dumps({**meta, "medmoe_version": written_by}))
        with pytest.raises(CheckpointError, match="a_setting_of_the_future") as info:
            load_checkpoint(tmp_path)
        assert says in str(info.value)
        assert ("upgrade medmoe" in str(info.value)) == (written_by == "99.0.0")


def test_resume_reproduces_an_uninterrupted_run(data, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train(fast_config(tmp_path, "train.epochs=2"), [data], straight, progress=False)
    parted = tmp_path / "parted"
    train(fast_config(tmp_path, "train.epochs=1"), [data], parted, progress=False)
    train(fast_config(tmp_path, "train.epochs=2"), [data], parted, resume=True, progress=False)
    a, b = load_file(straight / "model.safetensors"), load_file(parted / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert json.loads((straight / "history.json").read_text())[-1]["val_loss"] == \
        json.loads((parted / "history.json").read_text())[-1]["val_loss"]


def test_resume_refuses_a_changed_config(data, tmp_path: Path) -> None:
    train(fast_config(tmp_path, "train.epochs=1"), [data], tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(fast_config(tmp_path, "train.epochs=2", "train.lr=0.01"), [data], tmp_path / "run",
              resume=True, progress=False)


def test_no_prompt_ablation_never_loads_the_text_model(data, tmp_path: Path, monkeypatch) -> None:
    import medmoe.text.cache as cache

    def refuse(spec: str):
        raise AssertionError("text encoder built")

    monkeypatch.setattr(cache, "build_text_encoder", refuse)
    train(fast_config(tmp_path, "train.epochs=1", "model.prompt=false"), [data], tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run").prompt_embeddings is None


def test_evaluation_reports_every_view(trained: Path, data, tmp_path: Path) -> None:
    ckpt = load_checkpoint(trained)
    result = collect(ckpt, [data], split="test", cache_dir=tmp_path / "cache", progress=False)
    metrics = compute_metrics(ckpt, result)
    assert set(metrics.tasks) == set(ckpt.tasks.ids)
    for m in metrics.tasks.values():
        assert m.primary.n_normal == 4 and m.primary.n_abnormal == 4
        assert 0 <= m.primary.auroc <= 1 and m.routing_accuracy is not None and 0 <= m.routing_accuracy <= 1
        assert m.all_sources is None and m.pixel is not None and 0 <= m.pixel.pixel_auroc <= 1  # masks everywhere
        assert {"f1_best", "acc_best", "threshold_best", "f1_val", "sensitivity_val", "dedup", "excluded",
                "routing_accuracy", "pixel_auroc"} <= set(m.to_dict())
    assert metrics.mean["auroc"] == pytest.approx(sum(m.primary.auroc for m in metrics.tasks.values()) / 5)
    assert metrics.mean["n_normal"] == 20 and "threshold_val" not in metrics.mean
    markdown = write_report(metrics, ckpt, tmp_path / "out" / "metrics.json", split="test")
    assert "peeks at test labels" in markdown and "MEAN" in markdown
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["tasks"]["head_ct"]["auroc"] == pytest.approx(metrics.tasks["head_ct"].primary.auroc, abs=1e-6)
    assert list(saved["tasks"]["head_ct"]) == list(metrics.to_dict()["tasks"]["head_ct"])
    figures = write_figures(ckpt, result, tmp_path / "fig")
    assert {p.name for p in figures} >= {"score_histograms.png", "expert_heatmap.png", "examples_head_ct.png"}


def test_evaluation_reports_the_decision_detect_makes(trained: Path, data, tmp_path: Path) -> None:
    from medmoe.api import Detector

    ckpt = load_checkpoint(trained)
    result = collect(ckpt, [data], split="test", cache_dir=tmp_path / "cache", progress=False)
    metrics = compute_metrics(ckpt, result, fpr=0.2)
    detector = Detector.load(trained)
    for task, m in metrics.tasks.items():
        deployed = m.deployed
        threshold, level = ckpt.calibration.threshold(task, 0.2)
        # the deployable threshold is the one detect decides at, not the percentile threshold
        assert m.primary.threshold_val == pytest.approx(threshold) == detector.spec.decision_threshold(task, 0.2)
        assert (deployed.fpr, deployed.level) == (0.2, pytest.approx(level)) and level >= 0.2
        assert deployed.fpr_observed == pytest.approx(1 - m.primary.specificity_val)
        assert deployed.sensitivity == pytest.approx(m.primary.sensitivity_val)
        assert all(0 <= getattr(deployed, k) <= 1 for k in ("out_of_scope_normal", "out_of_scope_abnormal",
                                                             "mismatch_normal", "mismatch_abnormal"))
    markdown = write_report(metrics, ckpt, tmp_path / "out" / "metrics.json", split="test")
    assert "Deployed decision at a false-positive rate of 0.2" in markdown and "fpr_observed" in markdown
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["tasks"]["brain_mri"]["deployed"]["fpr"] == 0.2


def test_dup_of_train_rows_are_excluded_from_dedup(trained: Path, data, tmp_path: Path) -> None:
    from dataclasses import replace

    from medmoe.data.manifest import Manifest

    flagged = [replace(s, flags=("dup_of_train",)) if s.split == "test" and s.label == 0 and s.task == "fundus"
               and i % 2 else s for i, s in enumerate(data.samples)]
    ckpt = load_checkpoint(trained)
    result = collect(ckpt, [Manifest(data.root, flagged, data.meta)], cache_dir=tmp_path / "c", progress=False)
    fundus = compute_metrics(ckpt, result).tasks["fundus"]
    excluded = fundus.excluded["dup_of_train"]
    assert excluded > 0
    assert fundus.dedup.n_normal == fundus.primary.n_normal - excluded


def test_figures_show_the_rows_the_table_measures(trained: Path, data, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    import medmoe.report.evaluation_report as evaluation
    from medmoe.data.manifest import Manifest

    flagged = [replace(s, flags=("other_source",)) if s.split == "test" and s.label == 1 and s.task == "fundus"
               and i % 2 else s for i, s in enumerate(data.samples)]
    ckpt = load_checkpoint(trained)
    result = collect(ckpt, [Manifest(data.root, flagged, data.meta)], cache_dir=tmp_path / "c", progress=False)
    fundus = compute_metrics(ckpt, result).tasks["fundus"]
    assert fundus.all_sources is not None
    drawn: dict[str, object] = {}
    monkeypatch.setattr(evaluation, "plot_score_histograms",
                        lambda path, groups, title, **kw: drawn.update(groups=groups, title=title, **kw) or Path(path))
    write_figures(ckpt, result, tmp_path / "fig")
    scores, labels = drawn["groups"]["fundus"]  # type: ignore[index]
    assert len(labels) == fundus.primary.n_normal + fundus.primary.n_abnormal < fundus.all_sources.n_abnormal + \
        fundus.all_sources.n_normal
    assert f"{fundus.excluded['other_source']} other-source rows left out" in str(drawn["title"])
    # the line on each task's histogram is the threshold detect decides at
    assert drawn["thresholds"]["fundus"] == pytest.approx(ckpt.calibration.threshold("fundus", 0.05)[0])  # type: ignore[index]


def test_keeping_the_last_epoch_computes_the_validation_loss_once(data, trained: Path, tmp_path: Path) -> None:
    """With ``train.selection=last`` nothing is ranked: the validation loss is computed after the last epoch only,
    and the weights are those of a run that computed it every epoch and kept its last."""
    train(fast_config(tmp_path, "train.epochs=2", "train.selection=last"), [data], tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert math.isnan(history[0]["val_loss"]) and math.isfinite(history[1]["val_loss"])
    ranked = json.loads((trained / "history.json").read_text())  # the same run with selection val_loss
    assert history[1]["val_loss"] == pytest.approx(ranked[1]["val_loss"], rel=1e-6)


def test_an_architecture_brings_its_training_defaults() -> None:
    # feature_moe's loss cannot rank epochs: it keeps the last one under any profile, unless told otherwise
    assert load_config(None, ["model.architecture=feature_moe"]).train.selection == "last"
    assert load_config("cpu-64", ["model.architecture=feature_moe"]).train.selection == "last"
    assert load_config("cpu-feat", ["train.selection=val_loss"]).train.selection == "val_loss"
    assert load_config("cpu-64").train.selection == "val_loss"


def test_switching_a_profiles_architecture_leaves_its_family_settings_behind(tmp_path: Path) -> None:
    """``cpu-feat`` spells feature_moe's settings; choosing a pixel model or a peer on it drops them, but a
    setting of another family given on the command line, or written in a file for its own architecture,
    is refused with its owners."""
    assert load_config("cpu-feat", ["model.architecture=patchcore"]).model.settings == PatchCoreSettings()
    # a setting both families have (the profile's cosine memory is feature_moe's): the new one's default
    assert load_config("cpu-feat", ["model.architecture=feature_nn"]).model.settings == MemorySettings()
    chosen = load_config("cpu-feat", ["model.architecture=patchcore", "model.memory_distance=cosine"])
    assert chosen.model.settings == PatchCoreSettings(memory_distance="cosine")
    assert load_config("cpu-feat", ["model.architecture=pixel_moe"]).model.resolution == 128  # common ones stay
    with pytest.raises(ConfigError, match="model.feature_width belongs to feature_moe, not pixel_moe"):
        load_config("cpu-feat", ["model.architecture=pixel_moe", "model.feature_width=16"])
    own = tmp_path / "mixed.yaml"
    own.write_text("model:\n  architecture: pixel_moe\n  feature_width: 16\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="model.feature_width belongs to feature_moe, not pixel_moe"):
        load_config(own)


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    config = load_config(None, ["train.lr=1e-3", "model.top_k=2", "train.tasks=[head_ct]"])
    assert config.train.lr == 0.001 and config.model.top_k == 2 and config.train.tasks == ("head_ct",)
    with pytest.raises(ConfigError, match="unknown train setting"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["epochs=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_too_few_experts_for_the_tasks(data, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least as many experts"):
        train(fast_config(tmp_path, "model.num_experts=3", "model.top_k=3"), [data], tmp_path / "r", progress=False)


def test_single_task_training(data, tmp_path: Path) -> None:
    result = train(fast_config(tmp_path, "train.epochs=1", "train.tasks=[head_ct]", "model.num_experts=1",
                               "model.top_k=1"), [data], tmp_path / "r", progress=False)
    assert list(result.thresholds) == ["head_ct"] and not math.isnan(result.thresholds["head_ct"])


def test_a_gray_model_reads_a_colour_task_gray_and_says_so(data, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A tasks file with ``channels: 3`` under the default ``model.in_channels=1``: the task's images are read gray
    (it used to end in a raw torch RuntimeError inside the first batch) and the log says how to read colour."""
    from dataclasses import replace

    from medmoe.data.manifest import Manifest

    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text("tasks:\n  - {id: colour_ct, organ: brain, modality: CT, prompt: Colour CT slice., channels: 3}\n")
    colour = Manifest(root=data.root, samples=[replace(s, task="colour_ct") for s in data.select(task="head_ct")])
    config = fast_config(tmp_path, "train.epochs=1", "model.num_experts=1", "model.top_k=1",
                         f"data.tasks_file={tasks_file}")
    with caplog.at_level("INFO", logger="medmoe.engine.data"):
        train(config, [colour], tmp_path / "r", progress=False)
    assert "colour_ct: colour task(s) read gray by this model (model.in_channels: 1)" in caplog.text
    assert (tmp_path / "r" / "model.json").is_file()


def test_profiles_ship_with_the_package_and_cpu_feat_is_the_default(tmp_path: Path, capsys, monkeypatch) -> None:
    import sys

    from medmoe.cli import main
    from medmoe.engine.config import DEFAULT_PROFILE, config_path, profiles

    assert {"cpu-feat", "cpu-64", "paper-256"} <= set(profiles()) and DEFAULT_PROFILE == "cpu-feat"
    feat = load_config("cpu-feat")
    assert feat.model.architecture == "feature_moe" and feat.model.settings == FeatureMoESettings(
        feature_expert="hybrid", memory_distance="cosine", score_top_fraction=0.1)
    assert load_config("cpu-64").model.architecture == "pixel_moe"
    # configs and checkpoints of earlier versions name the pixel model 'moe': still read, as its name now
    assert load_config(None, ["model.architecture=moe"]).model.architecture == "pixel_moe"
    assert architecture("moe") is architecture("pixel_moe")
    own = tmp_path / "mine.yaml"
    own.write_text("train: {epochs: 3}\n")
    assert load_config(own).train.epochs == 3
    with pytest.raises(ConfigError, match="neither a YAML file nor a profile .*cpu-feat"):
        config_path("cpu-999")
    monkeypatch.setattr(sys, "argv", ["medmoe", "train", "--help"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main()
    assert "default: cpu-feat" in " ".join(capsys.readouterr().out.split())


def test_train_command_refuses_a_non_empty_out(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from medmoe.cli import main

    taken = tmp_path / "run"
    taken.mkdir()
    (taken / "model.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["medmoe", "train", "--out", str(taken), "--data", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as info:
        main()
    output = capsys.readouterr()
    assert info.value.code == 2 and "already holds a run (model.json)" in output.err and "--overwrite" in output.err
    assert "Traceback" not in output.err and (taken / "model.json").read_text() == "{}"


def test_overwrite_leaves_nothing_of_the_replaced_run(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medmoe.cli import app
    from medmoe.engine.data import run_manifests

    run = tmp_path / "run"
    (run / "manifests").mkdir(parents=True)
    (run / "manifests" / "old-task.csv").write_text("stale")
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    (run / "model.json").write_text("{}")
    (run / "notes.txt").write_text("the user's own file")
    manifest = tmp_path / "m.csv"
    from medmoe.data.manifest import write_manifest

    write_manifest(data, manifest)
    done = CliRunner().invoke(app, ["train", "--data", str(manifest), "--out", str(run), "--overwrite", "--config",
                                    "cpu-64", "--epochs", "1", "--no-progress", "--set", "model.resolution=32",
                                    "--set", "model.fc_width=128", "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    assert done.exit_code == 0, done.output
    assert not (run / "eval").exists() and not (run / "manifests" / "old-task.csv").exists()
    assert [m.tasks for m in run_manifests(run)] == [data.tasks] and (run / "notes.txt").is_file()
    meta = json.loads((run / "model.json").read_text())
    assert meta["format"] == "medmoe-checkpoint" and meta["info"]["profile"] == "cpu-64"  # what made it

    # medmoe models names it as every result does, with its provenance and its decision thresholds
    described = CliRunner().invoke(app, ["models", str(run)], env={"COLUMNS": "200"})
    assert described.exit_code == 0, described.output
    assert f"run sha256 {meta['weights']['sha256'][:12]}" in described.output and "profile cpu-64" in described.output
    assert "brain_mri" in described.output and "threshold (fpr 0.05)" in described.output
