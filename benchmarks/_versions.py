"""Side-by-side measurements: this checkout's sources and, optionally, an earlier commit's."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def source_trees(before: str | None, work: Path) -> Iterator[dict[str, Path]]:
    """``{label: src folder}`` for this checkout and, with ``before``, that commit checked out in a git
    worktree under ``work`` (removed on exit); put a folder first on ``PYTHONPATH`` to run that version."""
    trees = {"this checkout": REPO / "src"}
    if before:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(work / "before"), before],
                       check=True, capture_output=True)
        trees[f"before ({before[:10]})"] = work / "before" / "src"
    try:
        yield trees
    finally:
        if before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "before")],
                           check=False, capture_output=True)
