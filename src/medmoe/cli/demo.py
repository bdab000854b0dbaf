"""``medmoe demo``: the whole pipeline on synthetic phantoms, in about two minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the synthetic data, the model and the report.")] = Path("demo_output"),
        config: Annotated[str, typer.Option("--config", "-c", help="Profile name (cpu-feat, cpu-64) or a YAML file.")] = "cpu-feat",
        epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default: the profile's).")] = None,
        n_train: Annotated[int, typer.Option(help="Synthetic training normals per task.")] = 160,
        seed: Annotated[int, typer.Option(help="Seed of the data and the training run.")] = 0,
    ) -> None:
        """Generate synthetic phantoms of the five tasks, train one model on all of them, evaluate it
        and write a report with the paper's figures. Synthetic data only: the numbers say the
        pipeline works, not how well medmoe detects disease."""
        from rich.console import Console
        from rich.markdown import Markdown

        from medmoe.data.synthetic import write_synthetic_dataset
        from medmoe.engine.checkpoint import load_checkpoint
        from medmoe.engine.config import load_config
        from medmoe.engine.train import train
        from medmoe.report.evaluation_report import evaluate_run

        console = Console()
        console.rule("[bold]medmoe demo[/] — synthetic phantoms, not real data")
        console.print(f"1/3 writing synthetic phantoms of 5 tasks to {out / 'data'} …")
        manifest = write_synthetic_dataset(out / "data", n_train=n_train, n_test_normal=40,
                                           n_test_abnormal=40, size=128, seed=seed)
        overrides = [f"train.seed={seed}", f"data.cache_dir={out / 'cache'}"]
        run_config = load_config(config, [*overrides, *([f"train.epochs={epochs}"] if epochs else [])])
        console.print(f"2/3 training one {run_config.model.architecture} model on all five tasks "
                      f"({config} profile, {run_config.train.epochs} epochs) …")
        train(run_config, [manifest], out / "run", provenance={"profile": config, "data": "synthetic phantoms"})
        console.print("3/3 evaluating on the held-out phantoms …")
        checkpoint = load_checkpoint(out / "run")
        result = evaluate_run(checkpoint, [manifest], out / "report" / "metrics.json", split="test",
                              figures=out / "report" / "figures", cache_dir=out / "cache")
        console.print(Markdown(result.markdown))
        console.print(f"report: [bold]{out / 'report'}[/] (metrics.json, metrics.md, figures/); "
                      f"model: [bold]{out / 'run'}[/]")
        console.print(f"next: medmoe detect {out / 'data'}/brain_mri/test/abnormal --task brain_mri "
                      f"--model {out / 'run'} --out {out / 'detect'}")
