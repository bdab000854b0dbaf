"""``medmoe detect``: score image files and folders with a trained model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from medmoe.errors import ConfigError
from medmoe.io.choice import parse_choice

if TYPE_CHECKING:
    from rich.table import Table

    from medmoe.api.batch import DetectRun
    from medmoe.api.spec import ModelSpec


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command."""

    @app.command()
    def detect(
        paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.csv, overlays and maps.")],
        model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder from 'medmoe train', an .onnx file from 'medmoe export', or an installed model's name (default: the shipped medmoe-universal; 'medmoe models' lists them).")] = None,
        prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="English text describing the images, e.g. 'axial brain MRI'.")] = None,
        task: Annotated[Optional[str], typer.Option("--task", "-t", help="A task id instead of a prompt, e.g. brain_mri.")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Stop if the prompt resembles no trained task (default: score, with decision unsure_prompt).")] = False,
        fpr: Annotated[float, typer.Option("--fpr", help="False-positive rate on normals the decision controls: anomalous when the p-value is at most this.")] = 0.05,
        batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass (and per flush of the results).")] = 32,
        window: Annotated[Optional[str], typer.Option(help="DICOM/NIfTI intensity window: CENTER,WIDTH or a preset (brain, subdural, bone, lung, ...).")] = None,
        slice_index: Annotated[Optional[str], typer.Option("--slice", help="Axial slice of 3-D NIfTI volumes: an index (0 = most inferior), first/middle/last, or all (each slice its own image); other files ignore it.")] = None,
        frame: Annotated[Optional[str], typer.Option(help="Frame of multi-frame DICOM / page of multi-page TIFF files: an index, first/middle/last, or all (each frame its own image); other files ignore it.")] = None,
        backend: Annotated[str, typer.Option(help="auto (onnx for .onnx files), torch or onnx.")] = "auto",
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads of the network (default: half the cores while overlays are drawn, else all: measured in benchmarks/results/deployed-speed.md).")] = None,
        overlays: Annotated[bool, typer.Option(help="Write <name>_overlay.png per image.")] = True,
        maps: Annotated[bool, typer.Option(help="Also write <name>_maps.npz per image (float16, compressed, at the input's size).")] = False,
        dicom_out: Annotated[bool, typer.Option("--dicom-out", help="For DICOM inputs, also write <name>_sr.dcm (the result as a Comprehensive SR) and <name>_map.dcm (the anomaly map as a Parametric Map), new series in the input's study, for a PACS.")] = False,
        workers: Annotated[Optional[int], typer.Option(min=0, help="Processes drawing overlays (default: one per CPU core; 0: draw in this one).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Keep the rows of an interrupted run in --out and score only the images it has not.")] = False,
        engine: Annotated[str, typer.Option(help="local: this process (overlays in --workers processes); ray: a Ray cluster (decoding and overlays in Ray tasks, --actors model replicas; also writes results.parquet; needs pip install 'medmoe[ray]').")] = "local",
        address: Annotated[Optional[str], typer.Option(help="With --engine ray: the cluster to join (the address 'ray start --head' prints); default: start a local Ray.")] = None,
        actors: Annotated[int, typer.Option(min=1, help="With --engine ray: model replicas, each loading the model once.")] = 1,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        """Score images for anomalies and write DIR/results.csv, DIR/<name>_overlay.png (and, with --maps,
        DIR/<name>_maps.npz). Rows are on disk as images finish: interrupted (Ctrl-C, SIGTERM), it writes
        results.csv for the images scored so far, and --resume with the same --out scores the rest.

        Without --prompt or --task, DICOM files get the task their Modality/BodyPartExamined tags
        suggest. Files that cannot be read are listed with the reason and skipped.
        Exit status: 0 all images scored, 1 some could not be (see the error column), 2 bad usage,
        128 + the signal when interrupted (130 Ctrl-C, 143 SIGTERM).
        """
        from rich.console import Console
        from tqdm.auto import tqdm

        from medmoe.api.batch import DetectOptions, detect_files
        from medmoe.api.detector import Detector
        from medmoe.api.inputs import collect_inputs
        from medmoe.api.ray_batch import PARQUET_NAME, RayRun, RaySettings, score_on_ray
        from medmoe.api.results_csv import RESULTS_NAME
        from medmoe.api.shipped import resolve_model
        from medmoe.atomic import check_writable, prepare_output_dir
        from medmoe.errors import DatasetError
        from medmoe.io.intensity import resolve_window

        if not 0 < fpr < 1:
            raise ConfigError(f"--fpr is a false-positive rate in (0, 1), not {fpr}; e.g. --fpr 0.05")
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine is local or ray, not {engine!r}")
        try:
            frames, slices = parse_choice(frame), parse_choice(slice_index)
        except ValueError as exc:
            raise ConfigError(f"--frame/--slice: {exc}") from None
        try:
            windowing = None if window is None else resolve_window(window)
        except ValueError as exc:
            raise ConfigError(f"--window: {exc}") from None
        check_writable(out)
        found = collect_inputs(paths, exclude=out, frame=frames, slice_index=slices)
        if not found.items:
            raise DatasetError(f"no image files in {', '.join(map(str, paths))}; medmoe reads PNG, JPEG, TIFF, "
                               "BMP, DICOM and NIfTI")
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (taskset, a container's cpuset)
        if engine == "ray":
            threads = threads or 1  # per model replica; the cluster's cores go to replicas and tasks
        else:
            threads = threads or (max(1, cores // 2) if overlays else cores)  # the rest draw the overlays
        model_path = resolve_model(model)
        detector = Detector.load(model_path, backend=backend, device=device, threads=threads)  # before --out exists: a bad model leaves none
        detector.check_request(prompt, task, strict=strict, fpr=fpr)
        prepare_output_dir(out)
        if (out / RESULTS_NAME).is_file() and not resume:
            Console(stderr=True).print(f"[yellow]note:[/] {out / RESULTS_NAME} of an earlier run will be replaced; "
                                       "pass --resume to keep its rows and score only the rest", highlight=False)
        options = DetectOptions(prompt=prompt, task=task, strict=strict, fpr=fpr, window=windowing,
                                batch_size=batch_size, overlays=overlays, maps=maps, dicom=dicom_out,
                                workers=cores if workers is None else workers, resume=resume)
        with tqdm(total=len(found.items), unit="image", desc="detect", disable=not progress) as bar:
            run: DetectRun
            if engine == "ray":
                run = score_on_ray(detector, model_path, found.items, out, options,
                                   RaySettings(address=address, actors=actors, threads=threads), progress=bar.update)
            else:
                run = detect_files(detector, found.items, out, options, progress=bar.update)
        _print_summary(run, found.notes, detector.spec)
        if isinstance(run, RayRun):
            Console().print(f"scored on {len(run.nodes)} Ray node(s); also {out / PARQUET_NAME}", highlight=False)
        if run.interrupted is not None:
            raise typer.Exit(128 + run.interrupted)
        if run.failed:
            raise typer.Exit(1)


def results_table(rows: list[dict[str, str]]) -> Table:
    """The scored rows of ``results.csv`` as a table: task, score, threshold, p-value, decision, scope, file."""
    from rich.table import Table

    table = Table("task", "score", "threshold", "p", "decision", "scope", title="results")
    table.add_column("file", overflow="fold")
    for r in rows:
        scope = {"true": "out of scope", "false": "in scope"}.get(r["out_of_scope"], "—")
        table.add_row(r["task"], r["score"], r["threshold"] or "—", r["p_value"] or "—", r["decision"], scope,
                      r["source"] + "".join(f" ({key} {r[key]})" for key in ("frame", "slice") if r[key]))
    return table


def _print_summary(run: DetectRun, notes: list[str], spec: ModelSpec) -> None:
    """The folders not searched, a table of up to 20 results, one line per kind of warning, the files that
    could not be scored, and where the results are (with the model that scored them)."""
    from rich.console import Console
    from rich.table import Table

    console, errors = Console(), Console(stderr=True)
    for note in notes:
        errors.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    scored = [r for r in run.rows if not r["error"]]
    if 0 < len(scored) <= 20:
        console.print(results_table(scored))
    for note, count in run.warnings.values():
        more = f" [dim](and {count - 1} more image(s) like it: see results.csv)[/]" if count > 1 else ""
        errors.print(f"[yellow]warning:[/] {note}{more}", highlight=False, soft_wrap=True)
    if run.failed:
        table = Table(title=f"{len(run.failed)} file(s) could not be scored", title_style="bold red")
        table.add_column("file", overflow="fold")
        table.add_column("reason")
        for r in run.failed:
            table.add_row(r["source"], r["error"])
        errors.print(table)
    counts = {d: sum(r["decision"] == d for r in scored) for d in ("anomalous", "unsure_prompt")}
    outside = sum(r["out_of_scope"] == "true" for r in scored)
    resumed = f" ({run.resumed} from the earlier run)" if run.resumed else ""
    line = (f"scored {len(scored)} of {len(run.rows)} image(s){resumed}, {counts['anomalous']} anomalous"
            + (f", {counts['unsure_prompt']} unsure of the prompt" if counts["unsure_prompt"] else "")
            + (f", {outside} out of scope (decision stated; check those images)" if outside else "")
            + f" by {spec.label} (sha256 {spec.weights_sha256[:12] or 'unknown'}); results: [bold]{run.results}[/]")
    if run.interrupted is not None:
        errors.print(f"[yellow]interrupted[/] by signal {run.interrupted}: {len(run.rows)} of {run.total} image(s) "
                     f"have rows in {run.results}; run again with --resume to score the rest", highlight=False)
    console.print(line, highlight=False)
