"""``medmoe demo --train``, end to end, on a small budget: phantoms written, one model
trained, evaluated with the deployed decision, the report and its figures written, and the next command it
suggests runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medmoe.cli import app

pytestmark = pytest.mark.slow


def test_demo_writes_a_report_and_its_suggested_detect_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "demo"
    done = CliRunner().invoke(app, ["demo", "--train", "--out", str(out), "--config", "cpu-64", "--epochs", "1",
                                    "--n-train", "12"])
    assert done.exit_code == 0, done.output
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"chest_xray", "brain_mri", "fundus", "breast_us", "head_ct"}
    assert all("deployed" in task for task in metrics["tasks"].values())
    assert {p.name for p in (out / "report" / "figures").iterdir()} >= {"score_histograms.png",
                                                                        "examples_brain_mri.png"}
    suggested = next(line for line in done.output.splitlines() if line.startswith("next: medmoe detect"))
    detect = CliRunner().invoke(app, [*shlex.split(suggested.removeprefix("next: medmoe ")), "--no-progress"])
    assert detect.exit_code == 0, detect.output
    assert (out / "detect" / "results.csv").is_file()
