"""Atomic file writes (a reader never sees a half-written checkpoint, manifest or report), and output
folders checked before the work that fills them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from medmoe.errors import ConfigError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to ``path`` atomically: a temporary file in the same folder, then a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    """The process umask (read by setting and restoring it; done once, at import, before any
    threads could race on it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def check_writable(folder: str | Path, option: str = "--out") -> Path:
    """Check, before any work, that files can be written in ``folder`` — or, where it does not exist yet,
    that it can be made in its nearest existing parent — without creating anything; returns ``folder``.

    Raises:
        ConfigError: one sentence naming the folder and ``option``: it is a file, or cannot be written.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} '{folder}' cannot be written: '{existing}' is a file; choose a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".medmoe-write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{option} '{folder}' cannot be written ({exc.strerror or exc} in '{existing}'); choose "
                          "a folder you can write to") from None
    return folder


def prepare_output_dir(folder: str | Path, option: str = "--out") -> Path:
    """:func:`check_writable`, then create ``folder`` (and its parents); returns it."""
    check_writable(folder, option)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """:func:`check_writable` for the folder the file ``path`` will be written into; returns ``path``.

    Raises:
        ConfigError: as :func:`check_writable`, or ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} '{path}' is a folder; give the file to write")
    check_writable(path.parent, option)
    return path
