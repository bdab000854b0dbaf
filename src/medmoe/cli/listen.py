"""``medmoe listen``: a DICOM node (:mod:`medmoe.node`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``listen`` command."""

    @app.command()
    def listen(
        send_to: Annotated[str, typer.Option("--send-to", help="Where result objects go: HOST:PORT:AET of a Storage SCP (e.g. the PACS).")],
        model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder from 'medmoe train', an .onnx file from 'medmoe export', or an installed model's name (default: the shipped medmoe-universal).")] = None,
        ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title.")] = "MEDMOE",
        host: Annotated[str, typer.Option(help="Address to listen on (DICOM has no authentication of its own: keep it on a trusted network).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (11112 is DICOM's registered one).")] = 11112,
        prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="English text describing every image received.")] = None,
        task: Annotated[Optional[str], typer.Option("--task", "-t", help="A task id for every image received.")] = None,
        fpr: Annotated[float, typer.Option("--fpr", help="False-positive rate on normals the decision controls.")] = 0.05,
        work_dir: Annotated[Path, typer.Option("--work-dir", help="Holds inbox/ (images being scored) and outbox/ (results not yet sent; sent at the next start if the destination was down).")] = Path("medmoe-node"),
        retry: Annotated[float, typer.Option(min=1.0, help="Seconds before sending again to a destination that failed.")] = 30.0,
        backend: Annotated[str, typer.Option(help="auto (onnx for .onnx files), torch or onnx.")] = "auto",
        threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads of the network (default: one per core).")] = None,
    ) -> None:
        """Receive images over DICOM (a Storage SCP), score every frame, and C-STORE each result's SR and
        Parametric Map or overlay (new series in the image's study) to --send-to. Without --prompt or --task, each
        file's task comes from its Modality/BodyPartExamined tags, and a file they suggest none for is
        answered 'Cannot understand' (0xC000). Results wait in WORK_DIR/outbox until the destination took them. Ctrl-C or SIGTERM stops it."""
        import logging

        from rich.console import Console

        from medmoe.api import Detector
        from medmoe.api.batch import signals_as_interrupts
        from medmoe.errors import ConfigError
        from medmoe.node.outbox import Destination, Outbox
        from medmoe.node.scp import DicomNode, NodeSettings

        if not 0 < fpr < 1:
            raise ConfigError(f"--fpr is a false-positive rate in (0, 1), not {fpr}; e.g. --fpr 0.05")
        if not 0 < len(ae_title) <= 16:
            raise ConfigError(f"--ae-title must have 1 to 16 characters, not {ae_title!r}")
        destination = Destination.parse(send_to)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # not a line per attribute it copies
        detector = Detector.load(model, backend=backend, threads=threads)
        detector.check_request(prompt, task, strict=False, fpr=fpr)
        outbox = Outbox(work_dir / "outbox", destination, ae_title=ae_title, retry_seconds=retry)
        node = DicomNode(detector, outbox, work_dir, NodeSettings(ae_title=ae_title, prompt=prompt, task=task, fpr=fpr))
        Console(stderr=True).print(f"[bold]{ae_title}[/] listening on {host}:{port} with {detector.spec.label}, "
                                   f"sending results to {destination} ({len(outbox.pending())} waiting from before); "
                                   "Ctrl-C stops", highlight=False)
        with signals_as_interrupts():  # Ctrl-C and SIGTERM (a service manager's stop) both stop it cleanly
            try:
                node.start(host, port, block=True)
            except KeyboardInterrupt:
                pass
            finally:
                node.stop()
