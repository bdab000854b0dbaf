"""``medmoe detect``: score image files and folders with a trained model."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from medmoe.errors import ConfigError
from medmoe.io.choice import parse_choice


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command."""

    @app.command()
    def detect(
        paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).", show_default=False)],
        model: Annotated[Path, typer.Option("--model", "-m", help="Run folder from 'medmoe train', or an .onnx file from 'medmoe export'.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.csv, overlays and maps.")],
        prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Free text describing the images, e.g. 'axial brain MRI'.")] = None,
        task: Annotated[Optional[str], typer.Option("--task", "-t", help="A task id instead of a prompt, e.g. brain_mri.")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Stop if the prompt resembles no trained task (default: warn).")] = False,
        fpr: Annotated[float, typer.Option("--fpr", help="False-positive rate on normals the decision controls: anomalous when the p-value is at most this.")] = 0.05,
        batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
        window: Annotated[Optional[str], typer.Option(help="DICOM/NIfTI intensity window: CENTER,WIDTH or a preset (brain, subdural, bone, lung, ...).")] = None,
        slice_index: Annotated[Optional[str], typer.Option("--slice", help="Axial slice of 3-D NIfTI volumes: an index (0 = most inferior), first/middle/last, or all (each slice its own image); other files ignore it.")] = None,
        frame: Annotated[Optional[str], typer.Option(help="Frame of multi-frame DICOM / page of multi-page TIFF files: an index, first/middle/last, or all (each frame its own image); other files ignore it.")] = None,
        backend: Annotated[str, typer.Option(help="auto (onnx for .onnx files), torch or onnx.")] = "auto",
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        overlays: Annotated[bool, typer.Option(help="Write <name>_overlay.png per image.")] = True,
        maps: Annotated[bool, typer.Option(help="Also write <name>_maps.npz per image (float16, compressed, at the input's size).")] = False,
        workers: Annotated[Optional[int], typer.Option(min=0, help="Processes drawing overlays (default: one per CPU core; 0: draw in this one).")] = None,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        """Score images for anomalies and write DIR/results.csv, DIR/<name>_overlay.png (and, with --maps,
        DIR/<name>_maps.npz). Interrupted (Ctrl-C), it writes results.csv for the images scored so far.

        Without --prompt or --task, DICOM files get the task their Modality/BodyPartExamined tags
        suggest. Files that cannot be read are listed with the reason and skipped.
        Exit status: 0 all images scored, 1 some could not be (see the error column), 2 bad usage.
        """
        import warnings

        from rich.console import Console
        from rich.table import Table
        from tqdm.auto import tqdm

        from medmoe.api.batch import OverlayWriter, collect_inputs, result_row, write_outputs, write_results
        from medmoe.api.detector import Detector
        from medmoe.api.prompts import PromptWarning
        from medmoe.errors import DatasetError
        from medmoe.io.intensity import resolve_window

        console, errors = Console(), Console(stderr=True)
        if not 0 < fpr < 1:
            raise ConfigError(f"--fpr is a false-positive rate in (0, 1), not {fpr}; e.g. --fpr 0.05")
        try:
            frames, slices = parse_choice(frame), parse_choice(slice_index)
        except ValueError as exc:
            raise ConfigError(f"--frame/--slice: {exc}") from None
        try:
            windowing = None if window is None else resolve_window(window)
        except ValueError as exc:
            raise ConfigError(f"--window: {exc}") from None
        found = collect_inputs(paths, exclude=out, frame=frames, slice_index=slices)
        inputs = found.items
        for note in found.notes:
            errors.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        if not inputs:
            raise DatasetError(f"no image files in {', '.join(map(str, paths))}; medmoe reads PNG, JPEG, TIFF, "
                               "BMP, DICOM and NIfTI")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".medmoe-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--out '{out}' cannot be written ({exc.strerror}); choose a folder you can write to") from None
        detector = Detector.load(model, backend=backend, device=device)
        rows, failures = [], []
        notes: dict[str, tuple[str, int]] = {}  # one line per kind of warning: its first text, how many
        bar = tqdm(total=len(inputs), unit="image", desc="detect", disable=not progress)
        interrupted = False
        pool = (os.cpu_count() or 1) if workers is None else workers
        with warnings.catch_warnings(), OverlayWriter(pool if overlays else 0) as drawer:
            warnings.simplefilter("ignore", PromptWarning)  # reported once, from the results' warnings
            try:
                for start in range(0, len(inputs), batch_size):
                    chunk = inputs[start:start + batch_size]
                    outcomes = detector.predict_batch([i.plane for i in chunk], prompt, task, batch_size=batch_size,
                                                      strict=strict, fpr=fpr, window=windowing, return_errors=True)
                    for item, outcome in zip(chunk, outcomes, strict=True):
                        files = None
                        if isinstance(outcome, Exception):
                            failures.append((item.path, outcome))
                        else:
                            files = write_outputs(outcome, item.name, out, overlays=drawer if overlays else None,
                                                  maps=maps)
                            for note in outcome.warnings:
                                first, count = notes.get(_kind(note), (note, 0))
                                notes[_kind(note)] = (first, count + 1)
                        rows.append(result_row(item.plane, outcome, files))
                    bar.update(len(chunk))
            except KeyboardInterrupt:
                interrupted = True
        bar.close()
        results = write_results(rows, out)
        if interrupted:
            errors.print(f"[yellow]interrupted:[/] {len(rows)} of {len(inputs)} image(s) scored; {results} holds them")
            raise typer.Exit(130)

        scored = [r for r in rows if not r["error"]]
        if len(scored) <= 20:
            table = Table("task", "score", "threshold", "p", "decision", title="results")
            table.add_column("file", overflow="fold")
            for r in scored:
                table.add_row(r["task"], r["score"], r["threshold"] or "—", r["p_value"] or "—", r["decision"],
                              r["path"] + "".join(f" ({key} {r[key]})" for key in ("frame", "slice") if r[key]))
            if scored:
                console.print(table)
        for note, count in notes.values():
            more = f" [dim](and {count - 1} more image(s) like it: see results.csv)[/]" if count > 1 else ""
            errors.print(f"[yellow]warning:[/] {note}{more}", highlight=False, soft_wrap=True)
        if failures:
            table = Table(title=f"{len(failures)} file(s) could not be scored", title_style="bold red")
            table.add_column("file", overflow="fold")
            table.add_column("reason")
            for path, error in failures:
                table.add_row(str(path), getattr(error, "reason", str(error)))
            errors.print(table)
        flagged = sum(r["decision"] == "anomalous" for r in scored)
        outside = sum(r["decision"] == "out_of_scope" for r in scored)
        console.print(f"scored {len(scored)} of {len(rows)} image(s), {flagged} anomalous"
                      + (f", {outside} out of scope" if outside else "") + f"; results: [bold]{results}[/]")
        if failures:
            raise typer.Exit(1)


def _kind(note: str) -> str:
    """A warning with its numbers blanked: the same warning about several images, whatever their values."""
    return re.sub(r"\d+(\.\d+)?", "#", note)
