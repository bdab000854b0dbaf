"""benchmarks/shortcuts.py: AUROC of plain image statistics per task, on synthetic phantoms."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from engine_fixtures import synthetic

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "shortcuts.py"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDMOE_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_statistics_table_has_every_task(tmp_path: Path) -> None:
    synthetic(tmp_path / "data", n_train=4, n_test=5)
    out = tmp_path / "shortcuts.md"
    result = _run(tmp_path, "--data", str(tmp_path / "data" / "manifest.csv"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if re.match(r"\| (chest_xray|brain_mri|fundus|breast_us|head_ct) ", line)]
    assert len(rows) == 5
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "5 / 5"
        assert all(0 <= float(v) <= 100 for v in cells[2:5])


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
