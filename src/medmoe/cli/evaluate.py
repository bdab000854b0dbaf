"""``medmoe evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command."""

    @app.command()
    def evaluate(
        run: Annotated[Path, typer.Argument(help="Run folder written by 'medmoe train'.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Metrics JSON to write (a .md table is written beside it).")],
        manifest: Annotated[Optional[list[Path]], typer.Option(help="Manifest CSV(s); default: those the run was trained on.")] = None,
        split: Annotated[str, typer.Option(help="Split to evaluate: test or val.")] = "test",
        figures: Annotated[Optional[Path], typer.Option("--figures", help="Also write the paper's figures into this folder.")] = None,
        batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Evaluate a trained model: AUROC, AP, F1/ACC (test-peeking and validation thresholds), pixel metrics,
        routing accuracy, per task and their mean."""
        from rich.console import Console
        from rich.markdown import Markdown

        from medmoe.data.manifest import read_manifest
        from medmoe.engine.checkpoint import load_checkpoint
        from medmoe.engine.data import run_manifests
        from medmoe.report.evaluation import evaluate_run

        checkpoint = load_checkpoint(run)
        manifests = [read_manifest(p) for p in manifest] if manifest else run_manifests(run)
        result = evaluate_run(checkpoint, manifests, out, split=split, figures=figures, batch_size=batch_size,
                              progress=progress)
        Console().print(Markdown(result.markdown))
        Console().print(f"metrics: [bold]{out}[/]" + (f"; figures: [bold]{figures}[/]" if figures else ""))
