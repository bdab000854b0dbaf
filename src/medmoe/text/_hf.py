"""Shared helpers for the ``transformers`` text encoders: offline loading and clear errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from medmoe.errors import ConfigError

T = TypeVar("T")


def load_offline(what: str, loader: Callable[..., T], source: str) -> T:
    """Call ``loader(source, local_files_only=True)``; turn any failure into a clear ConfigError."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return loader(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the {what} from '{source}' without network access: {exc}. "
            "Point to a local folder holding the model's files."
        ) from exc
