"""Frozen-trunk features, computed once per image and kept in a content-addressed cache.

A model with a frozen part (the pretrained trunk of ``feature_moe`` and of the feature peers)
exposes it as ``model.prepare(x)``; training, validation and threshold fitting then run only the
trainable part on the prepared inputs. :func:`prepared_inputs` computes them in batches and caches
each image's feature map on disk so a second run (another seed, another ablation) pays nothing.

Cache key: SHA-256 of the preprocessed image as the trunk sees it (its ``float16`` bytes, which
already carry the file's content, resolution, channels and intensity window) together with the
trunk's identity (the model's ``frozen_identity()``: trunk variant and stages) and
:data:`FEATURE_VERSION`; entries are ``float16`` ``.npy`` files under ``<cache_dir>/features/``,
written atomically, so changing any of those misses the cache and nothing stale is ever read. An
unreadable entry or one of the wrong shape is recomputed. Models without a frozen part get their
images back unchanged and nothing is cached.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medmoe.atomic import atomic_write_bytes
from medmoe.model.base import FEATURE_DTYPE

FEATURE_VERSION = 1
"""Bump when feature extraction changes in a way the key does not capture."""

_log = logging.getLogger(__name__)


def frozen_identity(model: nn.Module) -> str | None:
    """What identifies the model's frozen part (``None``: the model has none and uses pixels)."""
    identity = getattr(model, "frozen_identity", None)
    return identity() if callable(identity) else None


def feature_key(image: torch.Tensor, identity: str) -> str:
    """Cache key of one preprocessed image ``(C, R, R)`` under a frozen part's ``identity``."""
    digest = hashlib.sha256()
    digest.update(f"v{FEATURE_VERSION}|{identity}|{tuple(image.shape)}|".encode())
    digest.update(image.to(torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def prepared_inputs(model: nn.Module, images: torch.Tensor, *, cache_dir: Path | None,
                    batch_size: int = 64, device: torch.device | str = "cpu",
                    progress: bool = True) -> torch.Tensor:
    """``model.prepare`` over ``images (n, C, R, R)``, read from or written to the feature cache.

    Returns ``images`` itself for models without a frozen part, else ``(n, D, h, w)`` ``float32``
    (values rounded through ``float16`` whether or not they came from the cache, so a cached and an
    uncached run are identical).
    """
    identity = frozen_identity(model)
    if identity is None or len(images) == 0:
        return images if identity is None else _empty_like_prepared(model, images, device)
    folder = None if cache_dir is None else Path(cache_dir) / "features"
    keys = [feature_key(img, identity) for img in images]
    out: torch.Tensor | None = None
    missing: list[int] = []
    for i, key in enumerate(keys):
        cached = _read(folder, key) if folder is not None else None
        if cached is None:
            missing.append(i)
            continue
        if out is None:
            out = torch.empty((len(images), *cached.shape), dtype=torch.float32)
        if tuple(cached.shape) != tuple(out.shape[1:]):
            _log.warning("recomputing feature cache entry %s of shape %s", key, tuple(cached.shape))
            missing.append(i)
            continue
        out[i] = torch.from_numpy(cached.astype(np.float32))
    bar = tqdm(total=len(missing), desc="trunk features", unit="img", disable=not progress or not missing)
    for start in range(0, len(missing), batch_size):
        rows = missing[start:start + batch_size]
        feats = model.prepare(images[rows].to(device)).to("cpu", FEATURE_DTYPE)
        if out is None:
            out = torch.empty((len(images), *feats.shape[1:]), dtype=torch.float32)
        out[rows] = feats.float()
        if folder is not None:
            for row, feat in zip(rows, feats.numpy(), strict=False):
                buffer = io.BytesIO()
                np.save(buffer, feat)
                atomic_write_bytes(folder / keys[row][:2] / f"{keys[row]}.npy", buffer.getvalue())
        bar.update(len(rows))
    bar.close()
    assert out is not None
    return out


def _empty_like_prepared(model: nn.Module, images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    probe = torch.zeros((1, *images.shape[1:]), device=device)
    return torch.zeros((0, *model.prepare(probe).shape[1:]))


def _read(folder: Path, key: str) -> np.ndarray | None:
    try:
        array = np.load(folder / key[:2] / f"{key}.npy", allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:
        _log.warning("recomputing corrupt feature cache entry %s (%s)", key, exc)
        return None
    return array if array.dtype == np.float16 else None
