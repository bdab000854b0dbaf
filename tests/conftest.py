"""Test-wide settings (one torch thread: CI has 2 shared cores; offline Hugging Face) and the shared
fixtures of ``api_fixtures`` (tiny saved models, phantom images), available to every test."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)

pytest_plugins = ["api_fixtures"]
