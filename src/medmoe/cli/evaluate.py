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
        fpr: Annotated[float, typer.Option("--fpr", help="False-positive rate of the deployable decision, as 'medmoe detect --fpr' makes it.")] = 0.05,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Evaluate a trained model: AUROC, AP, F1/ACC (test-peeking and validation thresholds), pixel metrics,
        routing accuracy, per task and their mean."""
        from rich.console import Console
        from rich.markdown import Markdown

        from medmoe.atomic import check_output_file, check_writable
        from medmoe.data.manifest import read_manifest
        from medmoe.engine.checkpoint import load_checkpoint
        from medmoe.engine.data import run_manifests
        from medmoe.errors import ConfigError
        from medmoe.report.evaluation_report import evaluate_run

        if not 0 < fpr < 1:
            raise ConfigError(f"--fpr is a false-positive rate in (0, 1), not {fpr}; e.g. --fpr 0.05")
        check_output_file(out)
        if figures is not None:
            check_writable(figures, "--figures")
        checkpoint = load_checkpoint(run)
        manifests = [read_manifest(p) for p in manifest] if manifest else run_manifests(run)
        result = evaluate_run(checkpoint, manifests, out, split=split, figures=figures, batch_size=batch_size,
                              progress=progress, fpr=fpr)
        Console().print(Markdown(result.markdown))
        Console().print(f"metrics: [bold]{out}[/]" + (f"; figures: [bold]{figures}[/]" if figures else ""))
