"""``medmoe detect`` under real signals: a terminal's Ctrl-C (SIGINT to the whole process group, overlay
workers included) and SIGTERM keep every finished row, stop every worker, and ``--resume`` completes the run
with each image once."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmoe.data.synthetic import make_phantom

pytestmark = pytest.mark.slow

IMAGES = 96
BATCH = 4


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough 256 × 256 brain phantoms that drawing their overlays takes several seconds."""
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        image = make_phantom("brain_mri", rng, size=256)[0]
        Image.fromarray((255 * image).astype(np.uint8)).save(folder / f"scan{i:03d}.png")
    return folder


def _detect(scans: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """``medmoe detect`` in its own process group (as a terminal runs it), with two overlay workers."""
    command = [sys.executable, "-c", "from medmoe.cli import main; main()", "detect", str(scans), "--model",
               str(model), "--out", str(out), "--task", "brain_mri", "--batch-size", str(BATCH), "--workers", "2",
               "--no-progress", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "COLUMNS": "200"})


def _wait_for_rows(out: Path, rows: int, process: subprocess.Popen[str]) -> None:
    """Wait until the partial results hold ``rows`` rows (the run is under way, workers busy)."""
    partial = out / "results.partial.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if partial.is_file() and len(partial.read_text(encoding="utf-8").splitlines()) > rows:
            return
        time.sleep(0.05)
    raise AssertionError("the run never got under way")


def _group_members(group: int) -> list[int]:
    """The live processes of a process group (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _no_member_left(group: int) -> bool:
    deadline = time.monotonic() + 15
    while _group_members(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _group_members(group)


@pytest.mark.parametrize(("sig", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c-to-the-group", "sigterm-to-the-main-process"])
def test_a_signal_keeps_every_finished_row_stops_the_workers_and_resume_completes(
        tiny_run: Path, scans: Path, tmp_path: Path, sig: signal.Signals, to_group: bool) -> None:
    out = tmp_path / "out"
    process = _detect(scans, tiny_run, out)
    _wait_for_rows(out, 2 * BATCH, process)
    if to_group:
        os.killpg(process.pid, sig)
    else:
        os.kill(process.pid, sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr
    assert f"interrupted by signal {int(sig)}" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert _no_member_left(process.pid), "overlay workers or the fork server outlived the run"

    kept = _rows(out)
    assert 2 * BATCH <= len(kept) < IMAGES and all(r["score"] and not r["error"] for r in kept)
    assert all((out / r["overlay"]).is_file() for r in kept)  # a row is written once its overlay is
    assert not (out / "results.partial.csv").exists()

    resumed = _detect(scans, tiny_run, out, "--resume")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"({len(kept)} from the earlier run)" in stdout
    rows = _rows(out)
    assert sorted(Path(r["source"]).name for r in rows) == sorted(p.name for p in scans.iterdir())  # each once
    before = {r["source"]: r for r in kept}
    assert all(before[r["source"]] == r for r in rows if r["source"] in before)  # kept rows untouched
    assert all((out / r["overlay"]).is_file() for r in rows)
