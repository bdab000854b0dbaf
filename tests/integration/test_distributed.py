"""The training command under torchrun: 2 CPU processes on gloo (DistributedDataParallel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from engine_fixtures import FAST, synthetic
from medmoe.engine.checkpoint import load_checkpoint


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    synthetic(tmp_path / "data", n_train=8, n_test=2)
    medmoe = shutil.which("medmoe", path=str(Path(sys.executable).parent))
    assert medmoe, "the medmoe console script is not installed next to this Python"
    small = [item for item in FAST if not item.startswith("model.fc_width")]  # the default profile is feature_moe
    sets = [a for item in (*small, "model.feature_width=16", f"data.cache_dir={tmp_path / 'cache'}")
            for a in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", medmoe, "train",
           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--epochs", "2", "--no-progress", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    ckpt = load_checkpoint(tmp_path / "run")
    assert set(ckpt.thresholds) == {"chest_xray", "brain_mri", "fundus", "breast_us", "head_ct"}
    assert "trained in" in done.stdout and done.stdout.count("trained in") == 1  # only rank 0 reports
