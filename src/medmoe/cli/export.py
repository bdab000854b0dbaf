"""``medmoe export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``export`` command."""

    @app.command()
    def export(
        out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write (model.medmoe.json is written beside it).")],
        model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder written by 'medmoe train', or an installed model's name (default: the shipped medmoe-universal).")] = None,
        format_: Annotated[str, typer.Option("--format", help="Export format (onnx is the only one).")] = "onnx",
    ) -> None:
        """Export a trained model to ONNX, with a JSON sidecar holding the tasks, prompt embeddings and
        thresholds, so 'medmoe detect --model model.onnx' and Detector.load(..., backend="onnx") run
        with onnxruntime and without torch. The export is checked against torch before it is kept."""
        from rich.console import Console

        from medmoe.api.export import export_onnx
        from medmoe.api.shipped import resolve_model
        from medmoe.atomic import check_output_file
        from medmoe.errors import ConfigError

        if format_ != "onnx":
            raise ConfigError(f"unknown export format {format_!r}; only 'onnx' is supported")
        check_output_file(out)
        result = export_onnx(resolve_model(model), out)
        Console().print(
            f"[bold green]exported[/] {result.model} to {result.onnx_path} and {result.sidecar_path.name}; onnxruntime vs torch: "
            f"max score difference {result.max_score_diff:.1e}, max map difference {result.max_map_diff:.1e}",
            highlight=False, soft_wrap=True)
