"""Models installed as Python packages: the shipped universal model, and any a user packages the same way.

A model package (``medmoe package`` writes one; ``models/medmoe-universal`` in the repository is the
shipped one) is a distribution whose import package holds ``model.json``, ``model.safetensors`` and
``MODEL_CARD.md``, and which names itself in the ``medmoe.models`` entry-point group::

    [project.entry-points."medmoe.models"]
    medmoe-universal = "medmoe_universal"

Wherever a command or :meth:`Detector.load <medmoe.api.Detector.load>` takes a model, it takes such a
name as well as a path; given none, it takes :data:`DEFAULT_MODEL`. Nothing is downloaded: a model is
there because its package is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

from medmoe.errors import CheckpointError

ENTRY_POINT_GROUP = "medmoe.models"
DEFAULT_MODEL = "medmoe-universal"
"""The model used when none is named: the universal model of the five public tasks."""
DEFAULT_PACKAGE_SOURCE = "models/medmoe-universal"
"""Where the default model's package lives in the repository (for the 'not installed' error)."""


@dataclass(frozen=True)
class InstalledModel:
    """A model package found in the ``medmoe.models`` entry-point group.

    Attributes:
        name: its name (the entry point's), e.g. ``medmoe-universal``.
        path: the folder holding its ``model.json`` and weights.
        distribution: the installed distribution that provides it, with its version (``medmoe-universal 1.0.0``).
    """

    name: str
    path: Path
    distribution: str


def installed_models() -> dict[str, InstalledModel]:
    """The model packages installed in this environment, by name.

    Raises:
        CheckpointError: an entry point whose module cannot be imported (a broken installation).
    """
    found: dict[str, InstalledModel] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = import_module(entry.value)
        except ImportError as exc:
            raise CheckpointError(f"the installed model package {entry.name!r} cannot be imported ({exc}); "
                                  "reinstall it") from exc
        if module.__file__ is None:
            raise CheckpointError(f"the installed model package {entry.name!r} has no folder; reinstall it")
        dist = entry.dist
        label = f"{dist.name} {dist.version}" if dist is not None else entry.value
        found[entry.name] = InstalledModel(entry.name, Path(module.__file__).parent, label)
    return found


def resolve_model(model: str | Path | None) -> Path:
    """The path of a model given as a path, an installed model's name, or ``None`` (the default model).

    A path that exists wins over a name; a name that is neither is returned as a path, for the loader to
    say what is missing there.

    Raises:
        CheckpointError: ``None`` or the default's name, and the default model's package is not installed.
    """
    if model is not None and Path(model).exists():
        return Path(model)
    name = DEFAULT_MODEL if model is None else str(model)
    installed = installed_models()
    if name in installed:
        return installed[name].path
    if name != DEFAULT_MODEL:
        return Path(name)
    raise CheckpointError(
        f"{'no model given, and ' if model is None else ''}the model package {name!r} is not installed; install it "
        f"(pip install ./{DEFAULT_PACKAGE_SOURCE} in the medmoe repository; 'make install' does) or pass --model RUN "
        "(a run folder from 'medmoe train' or an .onnx file from 'medmoe export')")
