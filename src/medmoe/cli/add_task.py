"""``medmoe add-task``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``add-task`` command."""

    @app.command("add-task")
    def add_task_command(
        task: Annotated[str, typer.Option("--task", "-t", help="Id of the new task, e.g. knee_mri.")],
        prompt: Annotated[str, typer.Option("--prompt", "-p", help="Its prompt, e.g. 'Knee MRI slice.'.")],
        data: Annotated[Path, typer.Option("--data", "-d", help="Its normal images: a folder (any images, or the folder layout train/normal, val/normal …) or a manifest CSV (rows of --task).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="New run folder (must not exist or be empty); the old run is not changed.")],
        model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder of a trained feature_moe model, or an installed model's name (default: the shipped medmoe-universal).")] = None,
        organ: Annotated[Optional[str], typer.Option(help="Organ (default: named in the prompt, else the task id).")] = None,
        modality: Annotated[Optional[str], typer.Option(help="Modality (default: named in the prompt).")] = None,
        expert: Annotated[str, typer.Option(help="expert: a decoder of its own; route: weights over the existing experts.")] = "expert",
        dicom_modality: Annotated[Optional[list[str]], typer.Option(help="DICOM Modality codes that suggest the task (e.g. MR); repeatable.")] = None,
        dicom_body_part: Annotated[Optional[list[str]], typer.Option(help="DICOM BodyPartExamined values that suggest it (e.g. KNEE); repeatable.")] = None,
        seed: Annotated[int, typer.Option(help="Seeds the validation carve, the memory and the training.")] = 0,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Add an organ or modality to a trained model from a few normal scans, in minutes: the existing
        tasks' weights, scores, maps and thresholds stay exactly as they were; the new run is a complete
        model for detect, serve, export and evaluate."""
        from rich.console import Console

        from medmoe.api.shipped import resolve_model
        from medmoe.atomic import check_writable
        from medmoe.data.manifest import read_manifest
        from medmoe.data.sources import prepare_source
        from medmoe.engine.add_task import add_task, folder_manifest
        from medmoe.errors import DatasetError
        from medmoe.tasks import Task
        from medmoe.text.vocabulary import named_terms
        from medmoe.trust import DEFAULT_FPR

        check_writable(out)
        if data.is_file():
            manifest = read_manifest(data)
        elif (data / "manifest.csv").is_file():
            manifest = read_manifest(data / "manifest.csv")
        elif (data / "train" / "normal").is_dir():
            manifest = prepare_source("folder", data, seed=seed, val_fraction=0.0, task=task)
        elif data.is_dir():
            manifest = folder_manifest(data, task)
        else:
            raise DatasetError(f"--data '{data}' does not exist (a folder of normal images or a manifest CSV)")
        organs, modalities = named_terms(prompt)
        new = Task(id=task, organ=organ or (sorted(organs)[0] if organs else task),
                   modality=modality or (sorted(modalities)[0] if modalities else ""), prompt=prompt,
                   dicom_modalities=tuple(m.upper() for m in dicom_modality or ()),
                   dicom_body_parts=tuple(b.upper() for b in dicom_body_part or ()))
        result = add_task(resolve_model(model), new, [manifest], out, expert=expert, seed=seed, progress=progress)
        Console().print(f"[bold green]added[/] {task!r} to {out} from {result.n_train} normals in "
                        f"{result.seconds:.1f} s; calibrated on {result.calibrated_on} (smallest p-value "
                        f"{result.smallest_p:.3g})", highlight=False, soft_wrap=True)
        if result.smallest_p > DEFAULT_FPR:
            Console(stderr=True).print(
                f"[bold yellow]warning:[/] with these normals {task!r} cannot be decided at a false-positive rate of "
                f"{DEFAULT_FPR:g}: its smallest p-value is {result.smallest_p:.3g}, so every answer decides at "
                f"{result.smallest_p:.3g} and says so; add normals ({round(1 / DEFAULT_FPR) - 1} or more reach "
                f"{DEFAULT_FPR:g})", highlight=False, soft_wrap=True)
