"""Run claims: several benchmark processes share one results folder without training a run twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from medmoe.benchmark.claim import CLAIM_FILE, claim, claim_owner


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claim_is_exclusive_and_released(tmp_path: Path) -> None:
    run = tmp_path / "ours" / "seed0" / "all"
    with claim(run) as first:
        assert first
        assert claim_owner(run)["pid"] == os.getpid()
        with claim(run) as second:  # this process is alive, so its claim holds
            assert not second
        assert (run / CLAIM_FILE).is_file()  # the refused claim did not remove the holder's file
    assert claim_owner(run) is None


def test_claim_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / CLAIM_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with claim(tmp_path) as mine:
        assert mine and claim_owner(tmp_path)["pid"] == os.getpid()


def test_claims_of_other_hosts_and_unreadable_claims_are_respected(tmp_path: Path) -> None:
    (tmp_path / CLAIM_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.invalid"}))
    with claim(tmp_path) as mine:
        assert not mine
    (tmp_path / CLAIM_FILE).write_text("")  # its creator has not written it yet
    with claim(tmp_path) as mine:
        assert not mine
    assert claim_owner(tmp_path) == {}
