"""Export a trained model to ONNX, with the metadata a torch-free :class:`~medmoe.api.detector.Detector` needs.

The network is traced with torch's TorchScript-based exporter (``dynamo=False``: the torch.export
based one needs ``onnxscript``, which medmoe does not depend on), opset :data:`OPSET`, with a dynamic
batch dimension. The file layout and the inputs/outputs are described in
:mod:`medmoe.api.onnx_backend`. After writing, the export is checked: onnxruntime and torch are run on
the same random inputs (batch sizes 1 and 3, the model's task prompts) and must agree within
:data:`SCORE_RTOL`/:data:`SCORE_ATOL` on scores and :data:`MAP_ATOL` on maps and weights, else
:class:`~medmoe.errors.CheckpointError` and both files are removed: an export that runs wrongly is
not left behind.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmoe import __version__
from medmoe.api.onnx_backend import FORMAT, FORMAT_VERSION, OUTPUTS, OnnxBackend, sidecar_path
from medmoe.api.spec import ModelSpec
from medmoe.api.torch_backend import ScreenedModel, TorchBackend
from medmoe.atomic import atomic_write_bytes, atomic_write_text
from medmoe.errors import CheckpointError
from medmoe.model.output import deployed_outputs
from medmoe.output_arrays import OutputArrays

OPSET = 17
"""ONNX opset of exported models (onnxruntime ≥ 1.13 runs it)."""

SCORE_RTOL = 1e-4
SCORE_ATOL = 1e-6
"""Tolerance of ONNX vs torch image scores (measured: ≤ 3e-7 relative on the demo model)."""

MAP_ATOL = 1e-5
"""Tolerance of ONNX vs torch anomaly maps, hallucination maps and router weights: absolute, or
relative to the output's largest value where that exceeds 1 (measured: ≤ 2e-7 on the pixel model)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely the export matches torch.

    Attributes:
        onnx_path: the ``.onnx`` file.
        sidecar_path: its metadata file.
        max_score_diff: largest ``|onnx − torch|`` of an image score in the check.
        max_map_diff: largest ``|onnx − torch|`` of any map pixel or router weight in the check.
        model: the exported model's name (:attr:`ModelSpec.label <medmoe.api.spec.ModelSpec.label>`).
    """

    onnx_path: Path
    sidecar_path: Path
    max_score_diff: float
    max_map_diff: float
    model: str


class _Exportable(nn.Module):
    """The model and its scope head with a tuple of tensors as output, in
    :data:`~medmoe.api.onnx_backend.OUTPUTS` order."""

    def __init__(self, network: ScreenedModel, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.network = network
        self.outputs = outputs

    def forward(self, image: torch.Tensor, text_embedding: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        named = deployed_outputs(*self.network(image, text_embedding))
        return tuple(t for name in self.outputs if (t := named[name]) is not None)


def export_onnx(run_dir: str | Path, out: str | Path, *, opset: int = OPSET) -> ExportResult:
    """Export the model of a run folder to ``out`` (``.onnx``) and write its sidecar beside it.

    Args:
        run_dir: a run folder from ``medmoe train``.
        out: the ``.onnx`` file to write (its folder is created).
        opset: ONNX opset.

    Raises:
        CheckpointError: the run folder is not a checkpoint, ``out`` does not end in ``.onnx``, or the
            exported model disagrees with torch.
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise CheckpointError(f"the export file '{out}' must end in .onnx")
    torch_backend = TorchBackend(run_dir)
    network, spec = torch_backend.network, torch_backend.spec
    probe = _probe_inputs(spec, batch=2)
    with torch.no_grad():
        sample = deployed_outputs(*network(*probe))
    outputs = tuple(name for name in OUTPUTS if sample[name] is not None)
    inputs = ("image", "text_embedding") if spec.uses_prompt else ("image",)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(_Exportable(network, outputs).eval(), probe[:len(inputs)], buffer, dynamo=False,
                          input_names=list(inputs), output_names=list(outputs), opset_version=opset,
                          dynamic_axes={name: {0: "batch"} for name in (*inputs, *outputs)})
    blob = buffer.getvalue()
    atomic_write_bytes(out, blob)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_by": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(Path(run_dir).resolve()),
        "onnx": {"file": out.name, "sha256": sha256(blob).hexdigest(), "opset": opset,
                 "inputs": list(inputs), "outputs": list(outputs)},
        "model": spec.to_dict(),
    }
    atomic_write_text(sidecar_path(out), json.dumps(meta, indent=1, allow_nan=True) + "\n")
    try:
        score_diff, map_diff = _check(torch_backend, OnnxBackend(out), spec)
    except CheckpointError:
        out.unlink(missing_ok=True)
        sidecar_path(out).unlink(missing_ok=True)
        raise
    return ExportResult(out, sidecar_path(out), score_diff, map_diff, spec.label)


def _probe_inputs(spec: ModelSpec, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random images ``(batch, C, R, R)`` and the task prompts' embeddings ``(batch, D)`` (cycled)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, spec.channels, spec.resolution, spec.resolution, generator=generator)
    if spec.prompt_embeddings is None:
        return images, None
    rows = np.arange(batch) % len(spec.prompt_embeddings)
    return images, torch.from_numpy(spec.prompt_embeddings[rows])


def _check(reference: TorchBackend, exported: OnnxBackend, spec: ModelSpec) -> tuple[float, float]:
    """Largest score and map differences of the two backends on random inputs; raise past tolerance."""
    score_diff = map_diff = 0.0
    for batch in (1, 3):
        images, text = _probe_inputs(spec, batch, seed=batch)
        arrays = images.numpy(), None if text is None else text.numpy()
        want, got = reference.run(*arrays), exported.run(*arrays)
        if not np.allclose(got.score, want.score, rtol=SCORE_RTOL, atol=SCORE_ATOL):
            raise CheckpointError(f"the ONNX export '{exported.path}' disagrees with torch on scores "
                                  f"({got.score} vs {want.score}); please report this")
        score_diff = max(score_diff, float(np.abs(got.score - want.score).max()))
        map_diff = max(map_diff, _max_map_diff(got, want))
    if map_diff > MAP_ATOL:
        raise CheckpointError(f"the ONNX export '{exported.path}' disagrees with torch on maps (max difference "
                              f"{map_diff:.2e} > {MAP_ATOL:g}); please report this")
    return score_diff, map_diff


def _max_map_diff(got: OutputArrays, want: OutputArrays) -> float:
    """Largest difference over the map and weight outputs present in both, each divided by the
    output's largest magnitude where that exceeds 1 (feature models' maps reach tens: float32 rounding
    of the trunk then exceeds an absolute 1e-5 while the maps agree to ~1e-6 relative)."""
    pairs = [(got.anomaly_map, want.anomaly_map), (got.hallucination_map, want.hallucination_map),
             (got.router_weights, want.router_weights), (got.scope_distances, want.scope_distances)]
    return max(float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))
               for a, b in pairs if a is not None and b is not None)

