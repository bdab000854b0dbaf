"""``medmoe models``: which model is this — its identity, provenance, tasks and calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``models`` command."""

    @app.command()
    def models(
        paths: Annotated[Optional[list[Path]], typer.Argument(help="Run folders from 'medmoe train', .onnx files from 'medmoe export' or installed models' names (default: every installed model).", show_default=False)] = None,
        fpr: Annotated[float, typer.Option("--fpr", help="The false-positive rate whose decision thresholds are listed.")] = 0.05,
    ) -> None:
        """Describe models: the name and weights digest every result carries (model, model_sha256), the
        medmoe version and profile that made each, and per task its prompt, the threshold detect decides at
        and what it is calibrated on. Each model is loaded, so its checksum is verified. Without paths, the
        installed models (the shipped medmoe-universal among them) are described."""
        from rich.console import Console
        from rich.table import Table

        from medmoe.api import Detector
        from medmoe.api.shipped import installed_models, resolve_model
        from medmoe.errors import CheckpointError, ConfigError

        if not 0 < fpr < 1:
            raise ConfigError(f"--fpr is a false-positive rate in (0, 1), not {fpr}; e.g. --fpr 0.05")
        console = Console()
        installed = installed_models()
        if not paths and not installed:
            raise CheckpointError("no model is installed and none was named; pass run folders or .onnx files")
        for given in paths or [Path(name) for name in installed]:
            path = resolve_model(given)
            spec = Detector.load(path, backend="auto").spec
            info = spec.info
            console.print(f"[bold]{spec.label}[/] sha256 {spec.weights_sha256[:12] or '(unknown)'} · {path}\n"
                          f"  trained with medmoe {spec.medmoe_version}, profile {info.get('profile', '(not recorded)')}"
                          f", seed {info.get('seed', '?')}, {spec.resolution} px, {spec.channels} channel(s)",
                          highlight=False)
            table = Table("task", "prompt", f"threshold (fpr {fpr:g})", "calibration normals")
            for task in spec.tasks:
                scores = [] if spec.calibration is None else spec.calibration.scores.get(task.id, [])
                table.add_row(task.id, task.prompt, f"{spec.decision_threshold(task.id, fpr):.4g}", str(len(scores)))
            console.print(table)
            if spec.calibration is not None:
                console.print(f"  calibrated on {spec.calibration.source}", highlight=False)
