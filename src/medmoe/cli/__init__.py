"""The ``medmoe`` command.

Each module in this package contributes sub-commands through a ``register(app)`` function, so a
command lives next to nothing but its own argument parsing; heavy imports (torch, transformers)
happen inside the command functions, which keeps ``medmoe --help`` fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from medmoe.errors import MedmoeError

app = typer.Typer(
    name="medmoe",
    help="Universal unsupervised anomaly detection in medical images (prompt-driven mixture of experts).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Universal unsupervised anomaly detection in medical images."""


for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}").register(app)


def main() -> None:
    """Console-script entry point: run the app, turning medmoe errors into one clear line."""
    try:
        app()
    except MedmoeError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
