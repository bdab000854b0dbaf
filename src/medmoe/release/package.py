"""Turn a trained run into an installable model package (``medmoe package``).

The package is a small Python distribution of its own — weights, ``model.json`` stamped with the
release's name and version, the test evaluation, ``MODEL_CARD.md`` and a licence notice — that names
itself in the ``medmoe.models`` entry-point group (:mod:`medmoe.api.shipped`), so ``pip install`` of it
makes the model loadable by name and, for :data:`~medmoe.api.shipped.DEFAULT_MODEL`, the default of every
command. It is versioned apart from medmoe: refreshing the weights does not change the code, and the
weights carry their training data's terms, which are not the code's licence.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from medmoe.api.shipped import DEFAULT_MODEL, ENTRY_POINT_GROUP
from medmoe.engine.checkpoint import META_NAME, RELEASE_KEY, WEIGHTS_NAME, load_checkpoint
from medmoe.errors import ConfigError
from medmoe.release.card import CARD_NAME, CardInputs, model_card

METRICS_NAME = "metrics.json"
MARKER = "# written by 'medmoe package'"
"""First line of a package's ``pyproject.toml``: the folder may be replaced by a new ``medmoe package``."""
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class PackagedModel:
    """What :func:`package_model` wrote.

    Attributes:
        root: the package folder (``pip install ROOT`` installs it).
        model_dir: the folder holding the weights, inside the import package.
        card: its ``MODEL_CARD.md``.
        size_bytes: the size of the weights file.
    """

    root: Path
    model_dir: Path
    card: Path
    size_bytes: int


def package_model(run_dir: str | Path, metrics: str | Path, out: str | Path, *, name: str, version: str,
                  reproduce: str) -> PackagedModel:
    """Write the model package of a run to ``out``, replacing an earlier package there.

    Args:
        run_dir: a run folder from ``medmoe train`` (with its ``manifests/``).
        metrics: its test evaluation, ``metrics.json`` of ``medmoe evaluate RUN --split test``.
        out: the package folder to write; it must not exist, be empty, or hold a package this wrote.
        name: the model's name (lower case, digits and hyphens): its distribution's and entry point's.
        version: the release version (PEP 440).
        reproduce: the command that makes the model from a data root, quoted in the card.

    Raises:
        ConfigError: a bad name or version, or ``out`` holds something else.
        CheckpointError: the run's weights do not match its ``model.json``, or the evaluation is not of
            this run's test split.
    """
    run_dir, metrics, out = Path(run_dir), Path(metrics), Path(out)
    if not _NAME.match(name):
        raise ConfigError(f"model name {name!r}: use lower-case letters, digits and single hyphens, e.g. my-model")
    try:
        Version(version)
    except InvalidVersion:
        raise ConfigError(f"version {version!r} is not a PEP 440 version, e.g. 1.0.0") from None
    if out.exists() and any(out.iterdir()) and not _ours(out):
        raise ConfigError(f"'{out}' exists and is not a model package written by 'medmoe package'; choose a new "
                          "folder")
    load_checkpoint(run_dir)  # the weights match model.json and fit the architecture
    module = name.replace("-", "_")
    inputs = CardInputs.read(run_dir, metrics, name=name, version=version, reproduce=reproduce)
    meta = {**inputs.meta, RELEASE_KEY: {"name": name, "version": version}}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model_dir = staging / "src" / module
        model_dir.mkdir(parents=True)
        shutil.copyfile(run_dir / WEIGHTS_NAME, model_dir / WEIGHTS_NAME)
        (model_dir / META_NAME).write_text(json.dumps(meta, indent=2, allow_nan=True) + "\n", encoding="utf-8")
        evaluation = {**json.loads(metrics.read_text(encoding="utf-8")), "run": f"{name} {version}"}  # not a local path
        (model_dir / METRICS_NAME).write_text(json.dumps(evaluation, indent=1, allow_nan=True) + "\n", encoding="utf-8")
        card = model_card(inputs)
        (model_dir / CARD_NAME).write_text(card, encoding="utf-8")
        (model_dir / "__init__.py").write_text(_init(name, version), encoding="utf-8")
        (staging / "pyproject.toml").write_text(_pyproject(name, module, version), encoding="utf-8")
        (staging / "LICENSE").write_text(_licence(name, card), encoding="utf-8")
        (staging / "README.md").write_text(_readme(name, module), encoding="utf-8")
        _swap(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model_dir = out / "src" / module
    return PackagedModel(out, model_dir, model_dir / CARD_NAME, (model_dir / WEIGHTS_NAME).stat().st_size)


def _ours(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and pyproject.read_text(encoding="utf-8").startswith(MARKER)


def _swap(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder at ``out``; an earlier package there goes only once it has."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _pyproject(name: str, module: str, version: str) -> str:
    return f'''{MARKER}; regenerate it rather than edit it
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "The medmoe model {name}: weights, calibration and model card (research use only)"
readme = "README.md"
requires-python = ">=3.11"
license-files = ["LICENSE"]

[project.entry-points."{ENTRY_POINT_GROUP}"]
{name} = "{module}"

[tool.setuptools.package-data]
{module} = ["{META_NAME}", "{WEIGHTS_NAME}", "{METRICS_NAME}", "{CARD_NAME}"]
'''


def _init(name: str, version: str) -> str:
    return (f'"""The medmoe model ``{name}`` {version}: its files are in this folder; see MODEL_CARD.md.\n\n'
            f"Load it with ``medmoe.api.Detector.load({name!r})`` or ``medmoe detect --model {name}``.\n"
            '"""\n\n'
            f'__version__ = "{version}"\n')


def _licence(name: str, card: str) -> str:
    terms = card[card.index("## Training data"):card.index("## Test metrics")].strip()
    return (f"The model {name} (the files model.safetensors, model.json, metrics.json and MODEL_CARD.md)\n\n"
            "These weights were trained on the public datasets listed below and are derived from them. They are\n"
            "released for research use only, under the terms of those datasets as far as those terms are known;\n"
            "some are unverified or research-only, so no other use is granted. They are not a medical device\n"
            "and must not be used for diagnosis. No warranty of any kind.\n\n"
            "The medmoe code that reads them is licensed separately (Apache-2.0, see the medmoe repository).\n\n"
            f"{terms}\n")


def _readme(name: str, module: str) -> str:
    return (f"# {name}\n\nA packaged medmoe model: install it beside medmoe (`pip install .`) and it is loadable "
            f"by name (`medmoe detect --model {name} ...`)"
            + (", and the default of every medmoe command" if name == DEFAULT_MODEL else "")
            + f".\n\nWhat it is, how it was trained and tested, and its limits: "
              f"[`src/{module}/{CARD_NAME}`](src/{module}/{CARD_NAME}). Licence: [`LICENSE`](LICENSE).\n")
