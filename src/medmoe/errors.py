"""The exceptions medmoe raises for problems a user can act on.

Every error names the file (or prompt, or folder) it is about and says what to do. The CLI turns
any :class:`MedmoeError` into one clear line on stderr and a non-zero exit code, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MedmoeError(Exception):
    """Base class of every error medmoe raises on purpose."""


class ImageReadError(MedmoeError):
    """An image file could not be read into an array.

    Args:
        path: the file.
        reason: what is wrong with it, and what to do about it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")


class DatasetError(MedmoeError):
    """A dataset folder or manifest is missing or not in the expected layout."""


class PromptError(MedmoeError):
    """A prompt is empty, or matches no trained task where a match is required."""


class CheckpointError(MedmoeError):
    """A checkpoint or run folder is missing, incomplete, or not a medmoe checkpoint."""


class ConfigError(MedmoeError):
    """A configuration file or value is invalid."""
