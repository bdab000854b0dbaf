"""No behaviour change from the refactors: the pixel model's and the baselines' outputs on a seeded
phantom run are bit-identical to those recorded at ``234c3e9`` (``tests/reference/record.py``).

PyTorch's CPU kernels round differently per instruction set, so a recording holds for one: the file
``outputs-234c3e9-<capability>.json`` (``torch.backends.cpu.get_cpu_capability()``, e.g. ``avx2``)
where one exists, else ``outputs-234c3e9.json`` (recorded on the machine of that commit). Each was made
by running ``record.py`` on a checkout of ``234c3e9``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).parent.parent / "reference"
sys.path.insert(0, str(REFERENCE))

from record import ARCHITECTURES, record  # noqa: E402


def recorded_outputs() -> dict[str, object]:
    """The recording of ``234c3e9`` for this CPU's instruction set (module docstring)."""
    specific = REFERENCE / f"outputs-234c3e9-{torch.backends.cpu.get_cpu_capability().lower()}.json"
    return json.loads((specific if specific.is_file() else REFERENCE / "outputs-234c3e9.json").read_text())


@pytest.fixture(scope="module")
def now(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return record(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_outputs_are_bit_identical_to_234c3e9(now: dict[str, object], architecture: str) -> None:
    assert now[architecture] == recorded_outputs()[architecture]
