"""No behaviour change from the refactors: the pixel model's and the baselines' outputs on a seeded
phantom run are bit-identical to those recorded at ``234c3e9`` (``tests/reference/record.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REFERENCE = Path(__file__).parent.parent / "reference"
sys.path.insert(0, str(REFERENCE))

from record import ARCHITECTURES, record  # noqa: E402


@pytest.fixture(scope="module")
def now(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return record(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_outputs_are_bit_identical_to_234c3e9(now: dict[str, object], architecture: str) -> None:
    recorded = json.loads((REFERENCE / "outputs-234c3e9.json").read_text())
    assert now[architecture] == recorded[architecture]
