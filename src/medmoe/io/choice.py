"""Which frame, page or slice of a file with several: one rule for DICOM, TIFF and NIfTI.

A *choice* is ``None`` (the file must have exactly one), an index (0-based), or a policy name:
``first``, ``middle`` (``n // 2``) or ``last``. A file with a single frame/page/slice ignores the
choice, so one ``--frame middle`` or ``--frame 3`` can be given for a folder that mixes multi-frame
and single-frame files; only a file that has several is held to it.
"""

from __future__ import annotations

from pathlib import Path

from medmoe.errors import ImageReadError

Choice = int | str | None
"""An index, ``first``/``middle``/``last``, or ``None``."""

POLICIES = ("first", "middle", "last")


def parse_choice(text: str | None) -> Choice:
    """A CLI value (``"3"``, ``"middle"``) as a :data:`Choice`; ``ValueError`` for anything else."""
    if text is None:
        return None
    text = text.strip().lower()
    if text in POLICIES:
        return text
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an index (0, 1, …) nor one of {', '.join(POLICIES)}") from None
    if value < 0:
        raise ValueError(f"an index must be ≥ 0, not {value}")
    return value


def choose_index(n: int, choice: Choice, path: str | Path, *, unit: str, flag: str, keyword: str,
                 note: str = "") -> int:
    r"""The 0-based index that ``choice`` picks among ``n`` (≥ 1) ``unit``\\ s of ``path``.

    Args:
        unit: what is counted (``frame``, ``page``, ``axial slice``).
        flag, keyword: how the user passes it on the command line and in Python (for the message).
        note: said after the count (e.g. the volume's shape).
    """
    if n == 1:
        return 0
    if choice is None:
        raise ImageReadError(path, f"it has {n} {unit}s{note}; pass {keyword}=0..{n - 1} (on the command line "
                                   f"{flag} 0..{n - 1}, or {flag} middle)")
    if isinstance(choice, str):
        if choice not in POLICIES:
            raise ImageReadError(path, f"{keyword}={choice!r} is neither an index nor one of {', '.join(POLICIES)}")
        return {"first": 0, "middle": n // 2, "last": n - 1}[choice]
    if not 0 <= choice < n:
        raise ImageReadError(path, f"{keyword}={choice} ({flag} {choice}) is out of range: it has {n} {unit}s, "
                                   f"0..{n - 1}")
    return int(choice)
