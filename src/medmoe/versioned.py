"""Reading the versioned JSON files medmoe writes beside model weights (checkpoints, ONNX sidecars)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from medmoe.errors import CheckpointError


def read_versioned_json(path: Path, *, fmt: str, version: int, what: str, oldest: int = 1) -> dict[str, Any]:
    """Parse ``path`` and check it is a ``fmt`` file of format ``oldest`` … ``version``.

    Args:
        path: the JSON file (must exist).
        fmt: the expected value of its ``format`` key.
        version: the newest ``format_version`` this medmoe reads.
        what: how to name the file in errors (``medmoe checkpoint``).
        oldest: the oldest ``format_version`` this medmoe still reads (a file without one is older).

    Raises:
        CheckpointError: invalid JSON, another format, a newer version or an older one.
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"'{path}' is not valid JSON ({exc}); is it a {what}?") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"'{path}' is not a {what} (no format: {fmt})")
    found = int(meta.get("format_version", 0))
    if found > version:
        raise CheckpointError(f"'{path}' has format version {found}, newer than this medmoe reads; upgrade medmoe")
    if found < oldest:
        written_by = f"medmoe {meta['medmoe_version']}" if "medmoe_version" in meta else "an older medmoe"
        raise CheckpointError(f"'{path}' has format version {found}, written by {written_by}: older than this "
                              f"medmoe reads ({oldest} to {version}); retrain the model with this medmoe, or "
                              f"read it with {written_by}")
    return meta


def model_label(name: str, version: str) -> str:
    """The name every result carries: ``medmoe-universal 1.0.0`` for a packaged model, else ``name`` alone."""
    return f"{name} {version}" if version else name


def unreadable(path: Path, written_by: str, problem: str, fix: str) -> str:
    """The one sentence for a model file this medmoe cannot read: where the file was written by a newer
    medmoe (``written_by``), that is the cause and the fix is to upgrade; otherwise ``problem`` and ``fix``."""
    from medmoe import __version__

    try:
        newer = Version(written_by) > Version(__version__)
    except InvalidVersion:
        newer = False
    if newer:
        return (f"'{path}' was written by medmoe {written_by}, newer than this medmoe {__version__}, which cannot "
                f"read it ({problem}); upgrade medmoe (pip install -U medmoe)")
    return f"'{path}' {problem}; {fix}"
