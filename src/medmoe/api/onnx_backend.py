"""The ONNX backend: a model exported by ``medmoe export`` run with onnxruntime, without torch.

An export is two files side by side (see :mod:`medmoe.api.export`):

- ``model.onnx``: the network. Inputs ``image (B, C, R, R)`` float32 in [0, 1] and, for models that
  route on prompts, ``text_embedding (B, D)``; outputs ``score (B,)``, ``anomaly_map (B, R, R)`` and,
  where the model has them, ``hallucination_map (B, C, R, R)`` (the raw ``u``),
  ``router_weights (B, N)`` and ``scope_distances (B, T)`` (the scope head, :mod:`medmoe.trust`).
  The batch dimension is dynamic.
- ``model.medmoe.json`` (the *sidecar*): the :class:`~medmoe.api.spec.ModelSpec` (tasks, prompts,
  prompt embeddings, thresholds, resolution, channels, text encoder, medmoe version), the ONNX file's
  SHA-256 and its input/output names.

Trained prompts and task ids run without torch (their embeddings are in the sidecar). A new
free-text prompt needs the text encoder, which is a ``transformers`` model and imports torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from medmoe.api.spec import ModelSpec
from medmoe.errors import CheckpointError
from medmoe.output_arrays import DEPLOYED_OUTPUTS, OutputArrays
from medmoe.versioned import read_versioned_json

FORMAT = "medmoe-onnx"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".medmoe.json"
OUTPUTS = DEPLOYED_OUTPUTS
"""Output names, in this order; the last three only where the model has them."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """The sidecar of an ONNX file: ``model.onnx`` → ``model.medmoe.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + SIDECAR_SUFFIX)


def find_onnx(path: str | Path) -> Path:
    """The ONNX file at ``path``: the file itself, or the only ``*.onnx`` file in a folder.

    Raises:
        CheckpointError: no such file, or a folder with none or several.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            what = "no .onnx file" if not found else f"{len(found)} .onnx files ({', '.join(p.name for p in found)})"
            raise CheckpointError(f"'{path}' holds {what}; pass the .onnx file written by 'medmoe export'")
        return found[0]
    if not path.is_file():
        raise CheckpointError(f"no ONNX model at '{path}'; export one with 'medmoe export --model RUN --out {path}'")
    return path


def read_sidecar(onnx_path: Path) -> dict[str, Any]:
    """The sidecar of ``onnx_path``, checked against the ONNX file's bytes.

    Raises:
        CheckpointError: a missing or invalid sidecar, a newer format, or an ONNX file that is not
            the one the sidecar describes.
    """
    meta_path = sidecar_path(onnx_path)
    if not meta_path.is_file():
        raise CheckpointError(f"'{onnx_path}' has no metadata file '{meta_path.name}' beside it; "
                              "export the model with 'medmoe export', which writes both")
    meta = read_versioned_json(meta_path, fmt=FORMAT, version=FORMAT_VERSION, what="medmoe ONNX sidecar")
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    if digest != meta.get("onnx", {}).get("sha256"):
        raise CheckpointError(f"'{onnx_path}' does not match '{meta_path}' (SHA-256 differs): the model was "
                              "replaced or is corrupt; export it again")
    return meta


class OnnxBackend:
    """Runs an exported model with onnxruntime.

    Args:
        path: the ``.onnx`` file, or a folder holding exactly one.
        device: ``cpu`` or ``cuda`` (needs the ``onnxruntime-gpu`` build).
        threads: the session's intra-op threads (``None``: onnxruntime's default, one per core).
    """

    name = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = find_onnx(path)
        meta = read_sidecar(self.path)
        self.spec = ModelSpec.from_dict(meta.get("model") or {}, sidecar_path(self.path))
        providers = {"cpu": ["CPUExecutionProvider"],
                     "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(device.split(":")[0])
        if providers is None:
            raise CheckpointError(f"unknown device {device!r} for the onnx backend; use cpu or cuda")
        if providers[0] not in ort.get_available_providers():
            raise CheckpointError(f"onnxruntime here has no {providers[0]} (available: "
                                  f"{', '.join(ort.get_available_providers())}); use device='cpu'")
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per core
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            raise CheckpointError(f"onnxruntime cannot load '{self.path}': {exc}") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray, text_embeddings: np.ndarray | None) -> OutputArrays:
        """``images (B, C, R, R)``, ``text_embeddings (B, D)`` or ``None`` → :class:`OutputArrays`."""
        feeds = {"image": np.ascontiguousarray(images, dtype=np.float32)}
        if "text_embedding" in self.input_names:
            if text_embeddings is None:
                raise ValueError("this model routes on prompts: pass text_embeddings (B, D)")
            feeds["text_embedding"] = np.ascontiguousarray(text_embeddings, dtype=np.float32)
        values = dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))
        return OutputArrays(**values)
