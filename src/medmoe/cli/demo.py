"""``medmoe demo``: the whole pipeline on synthetic phantoms, in about two minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: The demo's settings: the paper's model at 64×64, a short schedule sized for 2 CPU cores.
DEMO_OVERRIDES = (
    "model.resolution=64",
    "train.batch_size=32",
    "train.lr=1.0e-3",
)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the synthetic data, the model and the report.")] = Path("demo_output"),
        epochs: Annotated[int, typer.Option(help="Training epochs.")] = 25,
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
        from medmoe.engine.evaluate import collect, compute_metrics, write_figures, write_report
        from medmoe.engine.train import train

        console = Console()
        console.rule("[bold]medmoe demo[/] — synthetic phantoms, not real data")
        console.print(f"1/3 writing synthetic phantoms of 5 tasks to {out / 'data'} …")
        manifest = write_synthetic_dataset(out / "data", n_train=n_train, n_test_normal=40,
                                           n_test_abnormal=40, size=128, seed=seed)
        config = load_config(None, [*DEMO_OVERRIDES, f"train.epochs={epochs}", f"train.seed={seed}",
                                    f"data.cache_dir={out / 'cache'}"])
        console.print(f"2/3 training one model on all five tasks ({epochs} epochs) …")
        train(config, [manifest], out / "run")
        console.print("3/3 evaluating on the held-out phantoms …")
        checkpoint = load_checkpoint(out / "run")
        data = collect(checkpoint, [manifest], split="test", cache_dir=out / "cache")
        metrics = compute_metrics(checkpoint, data)
        markdown = write_report(metrics, checkpoint, out / "report" / "metrics.json", split="test")
        write_figures(checkpoint, data, out / "report" / "figures")
        console.print(Markdown(markdown))
        console.print(f"report: [bold]{out / 'report'}[/] (metrics.json, metrics.md, figures/); "
                      f"model: [bold]{out / 'run'}[/]")
        console.print(f"next: medmoe detect {out / 'data'}/brain_mri/test/abnormal --task brain_mri "
                      f"--model {out / 'run'} --out {out / 'detect'}")
