"""Record (or recompute) the outputs of seeded phantom runs of the pixel model and the baselines.

``python tests/reference/record.py OUT.json`` — run once at ``234c3e9`` (before the refactors of
issue 12) to make ``tests/reference/outputs-234c3e9.json``; ``test_reference.py`` recomputes the
same here and asserts every number is bit-identical. Uses only API that exists in both versions (the
output record's fields were renamed since: ``scores`` → ``score`` …; :func:`_field` reads either).
Floats are stored with :meth:`float.hex`, maps as SHA-256 of their ``float32`` bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ARCHITECTURES = {
    "moe": [],
    "moe_no_hq": ["model.hallucination=false"],
    "ae": ["model.architecture=ae", "model.prompt=false", "model.hallucination=false"],
    "ae_u": ["model.architecture=ae_u", "model.prompt=false", "model.hallucination=true"],
    "memae": ["model.architecture=memae", "model.prompt=false", "model.hallucination=false"],
}
SETTINGS = ["model.resolution=32", "model.fc_width=128", "train.batch_size=16", "train.lr=1e-3", "train.epochs=2",
            "train.seed=0", "train.num_threads=1"]


def _digest(array: np.ndarray | None) -> str | None:
    return None if array is None else hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


def _field(preds: object, name: str) -> np.ndarray | None:
    """``preds.<name>`` under today's name or its plural one of ``234c3e9`` (``score``/``scores`` …)."""
    return getattr(preds, name) if hasattr(preds, name) else getattr(preds, f"{name}s")


def record(work: Path) -> dict[str, object]:
    """Train each architecture on the same phantoms and return its outputs on their test split."""
    from medmoe.data.dataset import ImageDataset
    from medmoe.data.synthetic import write_synthetic_dataset
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.config import load_config
    from medmoe.engine.inference import predict, task_text_embeddings
    from medmoe.engine.train import train

    torch.set_num_threads(1)
    manifest = write_synthetic_dataset(work / "data", n_train=12, n_test_normal=2, n_test_abnormal=2, size=48, seed=0)
    outputs: dict[str, object] = {}
    for name, overrides in ARCHITECTURES.items():
        config = load_config(None, [*SETTINGS, f"data.cache_dir={work / 'cache'}", *overrides])
        train(config, [manifest], work / name, progress=False)
        checkpoint = load_checkpoint(work / name)
        entries = [(manifest, s) for s in manifest.select(split="test")]
        batch = ImageDataset(entries, checkpoint.tasks, resolution=32, cache_dir=work / "cache",
                             with_masks=False).materialize(progress=False)
        text = task_text_embeddings(checkpoint.prompt_embeddings, batch.task_indices)
        preds = predict(checkpoint.model, batch.images, text, keep_maps=True)
        outputs[name] = {
            "scores": [float(s).hex() for s in _field(preds, "score")],  # type: ignore[union-attr]
            "router_weights": _digest(preds.router_weights),
            "anomaly_maps": _digest(_field(preds, "anomaly_map")),
            "reconstructions": _digest(_field(preds, "reconstruction")),
            "hallucination_maps": _digest(_field(preds, "hallucination_map")),
            "thresholds": {k: float(v).hex() for k, v in checkpoint.thresholds.items()},
        }
    return outputs


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        result = record(Path(tmp))
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
