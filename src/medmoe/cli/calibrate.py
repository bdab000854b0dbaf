"""``medmoe calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command."""

    @app.command()
    def calibrate(
        model: Annotated[Path, typer.Option("--model", "-m", help="Run folder written by 'medmoe train'.")],
        manifest: Annotated[Optional[list[Path]], typer.Option("--manifest", help="Manifest(s) of the training data (default: the run's own manifests/); their train and val rows are used, never test.")] = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Fit the trust outputs of a trained run (p-values, prompt-image mismatch, out-of-scope input) from
        its own training and validation normals, and rewrite its checkpoint (weights unchanged). Training
        does this already; use it on runs trained before trust outputs existed."""
        from rich.console import Console

        from medmoe.data.manifest import read_manifest
        from medmoe.engine.trust_fitting import calibrate_run

        manifests = [read_manifest(p) for p in manifest] if manifest else None
        calibration = calibrate_run(model, manifests, progress=progress)
        sizes = ", ".join(f"{t} {len(s)}" for t, s in calibration.scores.items())
        Console().print(f"[bold green]calibrated[/] {model} on {calibration.source} ({sizes}); scope limit "
                        f"{calibration.scope_limit:.2f} × a task's typical distance", highlight=False, soft_wrap=True)
