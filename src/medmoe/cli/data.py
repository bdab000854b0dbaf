"""``medmoe prepare`` (dataset folder → manifest) and ``medmoe data summary|sources``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from medmoe.data.splits import VAL_FRACTION

if TYPE_CHECKING:
    from rich.console import Console

    from medmoe.data.manifest import Manifest

# metadata keys that count problems; shown highlighted when not zero
_PROBLEM_KEYS = ("unresolved", "unresolved_unused", "no_boxes", "unmatched_masks")
_SHOWN_CHARS = 300


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}… ({len(text)} characters in all)"


def print_summary(console: Console, manifest: Manifest, title: str) -> None:
    """Counts per task/split/label and per flag as a table, then the manifest's metadata."""
    from rich.table import Table

    from medmoe.data.manifest import KNOWN_FLAGS, SPLITS

    counts = Counter((s.task, s.split, s.label) for s in manifest.samples)
    flag_counts = Counter((s.task, s.split, f) for s in manifest.samples for f in s.flags)
    present = {f for _, _, f in flag_counts}
    flags = [f for f in KNOWN_FLAGS if f in present] + sorted(present - set(KNOWN_FLAGS))
    table = Table(title=title, title_justify="left")
    for header in ("task", "split", "normal", "abnormal", *flags):
        table.add_column(header, justify="left" if header in ("task", "split") else "right")
    for task in manifest.tasks:
        for split in SPLITS:
            if counts[task, split, 0] or counts[task, split, 1]:
                table.add_row(task, split, str(counts[task, split, 0]), str(counts[task, split, 1]),
                              *(str(flag_counts[task, split, f]) for f in flags))
    console.print(table)
    for task in manifest.tasks:
        other = sum(s.task == task and s.split == "test" and s.label == 1 and "other_source" in s.flags
                    for s in manifest.samples)
        same_source = f" ({counts[task, 'test', 1] - other} without other_source)" if other else ""
        console.print(f"{task}: train incl. val {counts[task, 'train', 0] + counts[task, 'val', 0]}, "
                      f"test normal {counts[task, 'test', 0]}, test abnormal {counts[task, 'test', 1]}"
                      f"{same_source}", highlight=False, soft_wrap=True)
    console.print(f"root: {manifest.root}", highlight=False)
    for key, value in manifest.meta.items():
        style = "bold yellow" if key in _PROBLEM_KEYS and value != "0" else None
        console.print(f"{key}: {_shorten(value)}", style=style, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``prepare`` and the ``data`` command group."""
    data_app = typer.Typer(help="Inspect dataset layouts and manifests.", no_args_is_help=True)

    @app.command()
    def prepare(
        source: Annotated[str, typer.Argument(help="Dataset layout; see 'medmoe data sources'.")],
        root: Annotated[Path, typer.Option("--root", help="The dataset folder (paths are stored relative to it).")],
        out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
        seed: Annotated[int, typer.Option(min=0, help="Seed of seeded splits and the validation carve.")] = 0,
        val_fraction: Annotated[float, typer.Option(
            "--val-fraction", min=0.0,
            help="Share of each task's training normals carved out as validation.")] = VAL_FRACTION,
        task: Annotated[str | None, typer.Option(
            help="Task id of the rows; required for 'folder', else the layout's own task.")] = None,
    ) -> None:
        """Read a dataset folder into a manifest CSV: splits, validation carve, duplicate flags."""
        from rich.console import Console

        from medmoe.atomic import check_output_file
        from medmoe.data.manifest import write_manifest
        from medmoe.data.sources import prepare_source

        check_output_file(out)
        manifest = prepare_source(source, root, seed=seed, val_fraction=val_fraction, task=task)
        write_manifest(manifest, out)
        console = Console()
        print_summary(console, manifest, title=f"{source} → {out}")
        console.print(f"wrote {len(manifest.samples)} rows to {out}", highlight=False)

    @data_app.command("summary")
    def summary(
        manifests: Annotated[list[Path], typer.Argument(help="Manifest CSV file(s).")],
    ) -> None:
        """Counts per task, split, label and flag, plus provenance and problems, of each manifest."""
        from rich.console import Console

        from medmoe.data.manifest import read_manifest

        console = Console()
        for path in manifests:
            print_summary(console, read_manifest(path), title=str(path))

    @data_app.command("sources")
    def sources() -> None:
        """List the dataset layouts 'medmoe prepare' reads."""
        from rich.console import Console
        from rich.table import Table

        from medmoe.data.sources import SOURCES

        table = Table("source", "task", "description")
        for name, src in SOURCES.items():
            table.add_row(name, src.task or "--task", src.description)
        Console().print(table)

    app.add_typer(data_app, name="data")
