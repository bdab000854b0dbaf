"""How a benchmark script ends: its Markdown printed, and saved where ``--out`` says."""

from __future__ import annotations

from pathlib import Path


def emit(text: str, out: Path | None) -> int:
    """Print ``text`` and, with ``out``, write it there atomically; the script's exit status (0)."""
    from medmoe.atomic import atomic_write_text

    print(text)
    if out:
        atomic_write_text(out, text)
    return 0
