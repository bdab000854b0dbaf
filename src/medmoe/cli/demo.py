"""``medmoe demo``: the shipped model on real sample scans (default), or the whole pipeline on phantoms (``--train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

PHANTOMS_PER_CLASS = 2
"""Held-out phantoms per task and class that the demo screens beside the real samples."""


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the samples, results and overlays (with --train: the synthetic data, the model and the report).")] = Path("demo_output"),
        model: Annotated[Optional[Path], typer.Option("--model", "-m", help="The model that screens the samples: a run folder, an .onnx file or an installed model's name (default: the shipped medmoe-universal).")] = None,
        train: Annotated[bool, typer.Option("--train", help="Instead: train a model on synthetic phantoms, evaluate it and write a report (about two minutes).")] = False,
        config: Annotated[str, typer.Option("--config", "-c", help="With --train: profile name (cpu-feat, cpu-64) or a YAML file.")] = "cpu-feat",
        epochs: Annotated[Optional[int], typer.Option(help="With --train: training epochs (default: the profile's).")] = None,
        n_train: Annotated[int, typer.Option(help="With --train: synthetic training normals per task.")] = 160,
        seed: Annotated[int, typer.Option(help="Seed of the phantoms (and of the training run).")] = 0,
    ) -> None:
        """Screen real sample scans that ship with installed packages (pydicom's CT slice, pydicom-data's head MR
        and chest radiograph, scikit-image's fundus photograph) and held-out phantoms with the shipped model: no
        training, no download. Writes OUT/detect/results.csv and an overlay per image. With --train, the whole
        pipeline on synthetic phantoms instead: the numbers then say the pipeline works, not how well medmoe
        detects disease."""
        if train:
            _train_on_phantoms(out, config, epochs, n_train, seed)
        else:
            _screen_samples(out, model, seed)


def _screen_samples(out: Path, model: Path | None, seed: int) -> None:
    import csv

    from rich.console import Console

    from medmoe.api.batch import DetectOptions, detect_files
    from medmoe.api.detector import Detector
    from medmoe.api.inputs import collect_inputs
    from medmoe.api.results_csv import RESULTS_NAME
    from medmoe.atomic import check_writable, prepare_output_dir
    from medmoe.cli.detect import results_table
    from medmoe.data.samples import SampleGroup, write_sample_scans
    from medmoe.data.synthetic import PHANTOMS, write_synthetic_dataset
    from medmoe.io.choice import parse_choice

    console = Console()
    check_writable(out)
    detector = Detector.load(model)
    spec = detector.spec
    console.rule(f"[bold]medmoe demo[/] — {spec.label} on sample scans")
    console.print(f"model: [bold]{spec.label}[/] (sha256 {spec.weights_sha256[:12] or 'unknown'}; tasks: "
                  f"{', '.join(spec.tasks.ids)})", highlight=False)
    groups, notes = write_sample_scans(out / "samples")
    write_synthetic_dataset(out / "samples" / "phantoms", n_train=2, n_test_normal=PHANTOMS_PER_CLASS,
                            n_test_abnormal=PHANTOMS_PER_CLASS, seed=seed)
    groups += [SampleGroup(out / "samples" / "phantoms" / task / "test", None,
                           f"held-out synthetic phantoms of {task} ({PHANTOMS_PER_CLASS} normal, "
                           f"{PHANTOMS_PER_CLASS} abnormal)", task=task)
               for task in PHANTOMS if task in spec.tasks.ids]
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    results = out / "detect"
    prepare_output_dir(results)
    for i, group in enumerate(groups):
        console.print(f"screening {group.description} …", highlight=False)
        found = collect_inputs([group.path], frame=parse_choice("middle"))
        detect_files(detector, found.items, results, DetectOptions(prompt=group.prompt, task=group.task,
                                                                   resume=i > 0))
    with (results / RESULTS_NAME).open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    console.print(results_table([r for r in rows if not r["error"]]))
    console.print(f"scored {len(rows)} image(s) with {spec.label}; results: [bold]{results / RESULTS_NAME}[/], "
                  f"overlays: [bold]{results}/*_overlay.png[/]", highlight=False)
    console.print("Real samples are not from the training data's sources: their answers show what your own scan "
                  "gets, not how accurate the model is (see its model card). Phantoms are synthetic: expect them "
                  "out of scope.", highlight=False)
    console.print("next: medmoe detect YOUR_SCANS --prompt 'Brain MRI slice.' --out results", highlight=False)


def _train_on_phantoms(out: Path, config: str, epochs: int | None, n_train: int, seed: int) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from medmoe.data.synthetic import write_synthetic_dataset
    from medmoe.engine.checkpoint import load_checkpoint
    from medmoe.engine.config import load_config
    from medmoe.engine.train import train
    from medmoe.report.evaluation_report import evaluate_run

    console = Console()
    console.rule("[bold]medmoe demo --train[/] — synthetic phantoms, not real data")
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
