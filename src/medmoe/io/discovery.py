"""Finding the files in a folder: hidden entries skipped, folder links followed once, broken links kept.

One walk for every command that takes a folder (``medmoe detect``, the dataset sources of
``medmoe prepare``), so they agree on what a folder holds:

- hidden files and folders (``.DS_Store``, ``._scan.png``, ``.git/``) are skipped;
- a symbolic link to a folder is followed, but each real folder is searched once, so a link back
  to a folder already searched (``data/up -> ..``) adds nothing and is reported in
  :attr:`Walk.notes` instead of looping;
- a symbolic link to a file that does not exist, or one that leads back to itself, is *kept* in
  :attr:`Walk.files`: the caller reads it and reports why it cannot
  (:func:`broken_link_reason`), rather than the file vanishing from the run without a word;
- a folder that cannot be listed (no permission) is a note too.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Walk:
    """What a folder holds.

    Attributes:
        files: regular files and broken links, sorted by their path relative to the folder.
        notes: one sentence per folder not searched: a link back to a folder already searched, or a
            folder that cannot be listed.
    """

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def walk_files(folder: str | Path, *, recursive: bool = True) -> Walk:
    """The files below ``folder`` (only its own with ``recursive=False``); see the module docstring.

    A missing folder holds nothing.
    """
    root = Path(folder)
    walk = Walk()
    if not root.is_dir():
        return walk
    seen = {root.resolve()}
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(current.iterdir())
        except OSError as exc:
            walk.notes.append(f"'{current}' could not be listed ({exc.strerror or exc}): its files are left out")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                real = entry.resolve()
                if not recursive:
                    continue
                if real in seen:
                    walk.notes.append(f"'{entry}' is '{real}' again (through a symbolic link): searched once")
                    continue
                seen.add(real)
                pending.append(entry)
            elif entry.is_file() or entry.is_symlink():
                walk.files.append(entry)
    walk.files.sort(key=lambda path: path.relative_to(root).parts)
    return walk


def broken_link_reason(path: str | Path) -> str | None:
    """Why a symbolic link cannot be read (it points nowhere, or back to itself); ``None`` for anything else."""
    link = Path(path)
    if not link.is_symlink() or link.exists():
        return None
    try:
        link.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "it is a symbolic link that leads back to itself (a loop); fix or remove the link"
    return f"it is a symbolic link to '{os.readlink(link)}', which does not exist; fix or remove the link"
