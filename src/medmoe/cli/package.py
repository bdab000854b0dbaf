"""``medmoe package``: a trained run as an installable model package with its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``package`` command."""

    @app.command()
    def package(
        run: Annotated[Path, typer.Argument(help="Run folder written by 'medmoe train'.", show_default=False)],
        metrics: Annotated[Path, typer.Option("--metrics", help="Its test evaluation: metrics.json of 'medmoe evaluate RUN --out ...'.")],
        name: Annotated[str, typer.Option("--name", help="The model's name (lower case, digits, hyphens), e.g. knee-mri.")],
        version: Annotated[str, typer.Option("--version", help="Its release version, e.g. 1.0.0.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="The package folder to write (replaces an earlier package there).")],
        reproduce: Annotated[str, typer.Option("--reproduce", help="The command that makes the model from a data root, for the card.")] = "(not recorded)",
    ) -> None:
        """Write an installable package of a model: its weights, model.json stamped with NAME and VERSION, the
        test evaluation, MODEL_CARD.md generated from the run's own files, and a licence notice with the training
        data's terms. 'pip install OUT' makes it loadable by name: medmoe detect --model NAME."""
        from rich.console import Console

        from medmoe.release.package import package_model

        made = package_model(run, metrics, out, name=name, version=version, reproduce=reproduce)
        Console().print(f"[bold green]packaged[/] {name} {version} in {made.root} (weights {made.size_bytes / 2**20:.1f} "
                        f"MiB); card: {made.card}; install: pip install {made.root}", highlight=False, soft_wrap=True)
