"""``medmoe train``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

RUN_MARKERS = ("model.json", "config.yaml", "checkpoints")
"""What a run folder holds once training has started (its manifests are written first, by every process)."""


def register(app: typer.Typer) -> None:
    """Add the ``train`` command."""

    @app.command()
    def train(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write the model and logs to.")],
        config: Annotated[str, typer.Option("--config", "-c", help="Profile name (cpu-feat, cpu-64, paper-256) or a YAML file.")] = "cpu-feat",
        data: Annotated[Optional[list[str]], typer.Option("--data", "-d", help="Data root (standard dataset folders), folder with manifest.csv, or manifest CSV; repeatable. Default: $MEDMOE_DATA.")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field, e.g. --set train.epochs=5; repeatable.")] = None,
        epochs: Annotated[Optional[int], typer.Option(help="Shortcut for --set train.epochs=N.")] = None,
        seed: Annotated[Optional[int], typer.Option(help="Shortcut for --set train.seed=N (also seeds data splits).")] = None,
        init: Annotated[Optional[Path], typer.Option("--init", help="Start from a trained model: a run folder or an installed model's name (medmoe-universal). The run takes its model settings and learned weights; --config and --set give the training settings; memories, thresholds and calibration are fitted on --data.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Train into a non-empty --out, replacing the run there.")] = False,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Train on the normal images of the data (all tasks in one model) and write a checkpoint.

        Runs unchanged under torchrun for DistributedDataParallel:
        torchrun --nproc_per_node 2 $(which medmoe) train ...
        """
        from rich.console import Console

        from medmoe.api.shipped import resolve_model
        from medmoe.atomic import check_writable
        from medmoe.engine.config import load_config
        from medmoe.engine.data import resolve_data, save_manifests
        from medmoe.engine.train import clear_run
        from medmoe.engine.train import train as run_training
        from medmoe.errors import ConfigError
        from medmoe.trust import DEFAULT_FPR

        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out '{out}' is a file; give a folder for the run")
        found = [name for name in RUN_MARKERS if (out / name).exists()]
        first_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 checks before anyone writes
        if found and first_process and not (resume or overwrite):
            raise ConfigError(f"--out '{out}' already holds a run ({', '.join(found)}); pass --resume to continue "
                              "it, --overwrite to replace it, or choose another folder")
        check_writable(out)
        overrides = list(set_ or [])
        overrides += [f"train.epochs={epochs}"] if epochs is not None else []
        overrides += [f"train.seed={seed}"] if seed is not None else []
        run_config = load_config(config, overrides)
        manifests = resolve_data(data or [], seed=run_config.train.seed, val_fraction=run_config.data.val_fraction)
        if first_process:
            if overwrite and not resume:
                clear_run(out)  # once the new run's data is known: nothing of the replaced run is left beside it
            save_manifests(manifests, out)
        result = run_training(run_config, manifests, out, resume=resume, progress=progress,
                              provenance={"profile": str(config)}, init=None if init is None else resolve_model(init))
        if result.thresholds:
            console = Console()
            console.print(f"[bold green]trained[/] in {result.seconds:.0f} s; best epoch {result.best_epoch} "
                          f"(validation loss {result.best_val_loss:.5f}); model in [bold]{out}[/]")
            console.print(f"decision thresholds at a false-positive rate of {DEFAULT_FPR:g} (what 'medmoe detect' "
                          "decides at by default):")
            for task, threshold in result.thresholds.items():
                console.print(f"  threshold {task}: {threshold:.6f}")
