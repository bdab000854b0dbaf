"""medmoe.serve.memory: the fixed mmap threshold that keeps the server's memory flat."""

from __future__ import annotations

import platform

import pytest

from medmoe.serve.memory import fix_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's")
def test_the_threshold_is_set_on_glibc_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fix_mmap_threshold() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
