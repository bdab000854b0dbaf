"""Claim a run folder, so that several benchmark processes can work through one plan side by side.

A claim is the file ``claimed.json`` in the run folder, created exclusively (``O_EXCL``) and removed
when the run ends. A claim left by a process that died on this host is taken over; one from another
host cannot be checked and is respected (delete the file by hand if no process is running there).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CLAIM_FILE = "claimed.json"


def _create(path: Path, owner: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(owner, f)
    return True


def claim_owner(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's claim (``{"pid", "host", "since"}``), ``{}`` if unreadable, ``None`` if unclaimed."""
    try:
        text = (run_dir / CLAIM_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:  # being written by its creator right now
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return True  # another host's process, or a claim still being written: cannot tell, so respect it
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Hold the run's claim for the ``with`` block.

    Yields:
        ``True`` if this process holds the claim (released on exit), ``False`` if a live process does.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "since": datetime.now(UTC).isoformat(timespec="seconds")}
    if not _create(path, owner):
        held_by = claim_owner(run_dir)
        if held_by is not None and _alive(held_by):
            yield False
            return
        path.unlink(missing_ok=True)  # left by a process that died
        if not _create(path, owner):
            yield False
            return
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)
