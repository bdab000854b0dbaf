"""Which frame, page or slice of a file with several: one rule for DICOM, TIFF and NIfTI.

A *choice* is ``None`` (the file must have exactly one), an index (0-based), or a policy name:
``first``, ``middle`` (``n // 2``) or ``last``. A file with a single frame/page/slice ignores the
choice, so one ``--frame middle`` or ``--frame 3`` can be given for a folder that mixes multi-frame
and single-frame files; only a file that has several is held to it.

``all`` (:data:`ALL`) is not read by one call: it asks for every frame as its own image, which
:func:`medmoe.io.planes` lists as :class:`Plane` s (``medmoe detect --frame all`` scores each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medmoe.errors import ImageReadError

Choice = int | str | None
"""An index, ``first``/``middle``/``last`` (or ``all`` where a caller expands it), or ``None``."""

POLICIES = ("first", "middle", "last")
ALL = "all"


@dataclass(frozen=True)
class Plane:
    """One 2-D image of a file: a frame or page (DICOM, TIFF) or an axial slice (NIfTI).

    Attributes:
        path: the file.
        frame: the frame/page choice (``None``: the file must have one, or the format has none).
        slice_index: the axial slice choice of a NIfTI volume.
    """

    path: Path
    frame: Choice = None
    slice_index: Choice = None

    @property
    def index(self) -> int | None:
        """The resolved frame or slice index, if one was chosen by number."""
        chosen = self.frame if self.frame is not None else self.slice_index
        return chosen if isinstance(chosen, int) else None

    @property
    def frame_number(self) -> int | None:
        """:attr:`index` where it is a frame or page (``None``: a slice, or none chosen by number)."""
        return self.index if self.frame is not None else None

    @property
    def slice_number(self) -> int | None:
        """:attr:`index` where it is an axial slice (``None``: a frame, or none chosen by number)."""
        return self.index if self.frame is None else None


def parse_choice(text: str | None) -> Choice:
    """A CLI value (``"3"``, ``"middle"``) as a :data:`Choice`; ``ValueError`` for anything else."""
    if text is None:
        return None
    text = text.strip().lower()
    if text in (*POLICIES, ALL):
        return text
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an index (0, 1, …) nor one of {', '.join((*POLICIES, ALL))}") from None
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
    if choice == ALL:
        raise ImageReadError(path, f"{keyword}={ALL!r} means every {unit} as its own image, which one read cannot "
                                   f"return; on the command line {flag} {ALL} scores each, in Python list them "
                                   "with medmoe.io.planes(path, ...) and score every Plane")
    if isinstance(choice, str) and choice not in POLICIES:
        raise ImageReadError(path, f"{keyword}={choice!r} is neither an index nor one of {', '.join(POLICIES)}")
    picked = resolve_choice(n, choice)
    if picked is None:
        raise ImageReadError(path, f"{keyword}={choice} ({flag} {choice}) is out of range: it has {n} {unit}s, "
                                   f"0..{n - 1}")
    return picked[0]


def resolve_choice(n: int, choice: Choice) -> list[int] | None:
    """The indices ``choice`` stands for among ``n`` (≥ 1) frames: one, or all for :data:`ALL`.

    ``None`` when it names none the file has (``None`` with several, an index out of range, an
    unknown name): the read then says why, with the file's own message.
    """
    if n == 1:
        return [0]
    if choice == ALL:
        return list(range(n))
    if isinstance(choice, str):
        return [{"first": 0, "middle": n // 2, "last": n - 1}[choice]] if choice in POLICIES else None
    return [choice] if choice is not None and 0 <= choice < n else None
