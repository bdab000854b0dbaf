"""``medmoe serve``: the HTTP service and web page of :mod:`medmoe.serve`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command."""

    @app.command()
    def serve(
        model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder from 'medmoe train', an .onnx file (with --backend onnx or auto), or an installed model's name (default: the shipped medmoe-universal).")] = None,
        host: Annotated[str, typer.Option(help="Address to listen on. The service has no authentication: keep it on 127.0.0.1 unless a proxy in front of it has.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
        fpr: Annotated[float, typer.Option("--fpr", help="Default false-positive rate of decisions (a request's 'fpr' field overrides it).")] = 0.05,
        backend: Annotated[str, typer.Option(help="torch, onnx, or auto (onnx for .onnx files).")] = "torch",
        device: Annotated[str, typer.Option(help="cpu or cuda (cuda:N with torch).")] = "cpu",
        threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads of the network (default: one per core).")] = None,
        max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest accepted upload, in MB (MiB).")] = 20.0,
    ) -> None:
        """Serve a model over HTTP: a web page at /, POST /v1/detect, GET /v1/tasks, GET /healthz,
        OpenAPI docs at /docs. The model is loaded once, before the server starts listening."""
        import uvicorn
        from rich.console import Console

        from medmoe.api import Detector
        from medmoe.serve import create_app
        from medmoe.serve.memory import fix_mmap_threshold

        console = Console(stderr=True)
        fix_mmap_threshold()  # freed image buffers go back to the kernel (medmoe.serve.memory)
        detector = Detector.load(model, backend=backend, device=device, threads=threads)
        spec = detector.spec
        console.print(f"loaded [bold]{spec.label}[/] (sha256 {spec.weights_sha256[:12] or 'unknown'}, "
                      f"{detector.backend.name}; tasks: {', '.join(detector.tasks.ids)})", highlight=False)
        if detector.backend.name == "torch":
            detector.match_prompt("warm-up")  # load the text model now, not during the first free-text request
        if not _is_loopback(host):
            console.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this address can "
                          "upload images; the service has no authentication or TLS")
        uvicorn.run(create_app(detector, max_upload_mb=max_upload_mb, fpr=fpr), host=host, port=port, log_level="info")


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
