"""Run configuration: YAML files mapped onto dataclasses, with ``section.field=value`` overrides.

Named profiles ship with the package (``src/medmoe/profiles/<name>.yaml``): ``cpu-feat`` (the default
of ``medmoe train``: ``feature_moe`` on a frozen pretrained trunk), ``cpu-64`` (the paper's pixel model
at 64×64 for a CPU) and ``paper-256`` (the paper's setting, for a GPU). ``--config`` takes a profile
name or a path to a YAML file of one's own.

A config file has up to three sections, each optional (defaults are the paper's settings)::

    model:   {resolution: 64, num_experts: 5, top_k: 5, hallucination: true, prompt: true}
    train:   {epochs: 60, batch_size: 64, lr: 5.0e-4, seed: 0}
    data:    {cache_dir: null, tasks_file: null}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from medmoe.data.splits import VAL_FRACTION
from medmoe.errors import ConfigError
from medmoe.model.config import ModelConfig, plain
from medmoe.model.registry import architecture, model_config


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the paper, §4.3).

    Attributes:
        epochs: passes over the training normals.
        batch_size: images per step (global, over all processes); batches mix tasks.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        alpha: weight of the routing loss (Eq. 6); the paper does not state it.
        beta: weight of the reconstruction loss (Eq. 6); the paper does not state it.
        seed: seeds weights, shuffling and seeded splits.
        threshold_percentile: the deployable threshold of a task is this percentile of its
            validation normals' scores.
        text_encoder: ``minilm`` or ``clip:<path>`` (see :mod:`medmoe.text`).
        tasks: task ids to train on; empty means every task present in the data.
        num_threads: torch CPU threads (0: torch's default).
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        selection: which epoch's weights the run keeps: ``val_loss`` (the lowest validation loss;
            the paper's models) or ``last``. ``feature_moe`` uses ``last``: its Eq. 5 error is divided
            by a running temperature that follows the errors down, so its loss stays level while the
            reconstruction improves and cannot rank epochs. With ``last`` the validation loss ranks nothing, so
            it is computed after the last epoch only (a hybrid ``feature_moe`` searches its memories to score).
    """

    epochs: int = 250
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    alpha: float = 1.0
    beta: float = 1.0
    seed: int = 0
    threshold_percentile: float = 95.0
    text_encoder: str = "minilm"
    tasks: tuple[str, ...] = ()
    num_threads: int = 0
    device: str = "auto"
    selection: str = "val_loss"

    def __post_init__(self) -> None:
        if self.selection not in ("val_loss", "last"):
            raise ConfigError(f"train.selection must be 'val_loss' or 'last', not {self.selection!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("train.epochs must be ≥ 1 and train.batch_size ≥ 2 (batch norm)")
        if not 0 < self.threshold_percentile <= 100:
            raise ConfigError("train.threshold_percentile must be in (0, 100]")


@dataclass(frozen=True)
class DataConfig:
    """Where data and its preprocessed cache live.

    Attributes:
        cache_dir: preprocessed-image cache; default ``$MEDMOE_CACHE`` or ``~/.cache/medmoe``.
        tasks_file: a YAML file of extra tasks (see :mod:`medmoe.tasks`).
        val_fraction: share of training normals carved out for validation when preparing
            manifests from a data root.
    """

    cache_dir: str | None = None
    tasks_file: str | None = None
    val_fraction: float = VAL_FRACTION


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs besides the data location."""

    model: ModelConfig = field(default_factory=lambda: model_config({}))
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-serialisable form."""
        return {"model": self.model.to_dict(), "train": plain(asdict(self.train)),
                "data": asdict(self.data)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, stored: bool = False) -> RunConfig:
        """Build from a dict with optional ``model``/``train``/``data`` sections (``stored``: written by
        medmoe, see :func:`~medmoe.model.registry.model_config`)."""
        unknown = set(data) - {"model", "train", "data"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; use model, train, data")
        model = model_config(data.get("model") or {}, stored=stored)
        defaults = architecture(model.architecture).train_defaults  # what the architecture needs, unless set
        return cls(
            model=model,
            train=_build(TrainConfig, {**defaults, **(data.get("train") or {})}, "train"),
            data=_build(DataConfig, data.get("data") or {}, "data"),
        )


PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
DEFAULT_PROFILE = "cpu-feat"
"""What ``medmoe train``, ``medmoe demo`` and the README's quick start use without ``--config``."""


def profiles() -> list[str]:
    """Names of the packaged profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """The YAML file of a profile name (``cpu-feat``) or of a path; raise if it is neither."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PROFILE_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"config file '{path}' does not exist")
    raise ConfigError(f"config '{name_or_path}' is neither a YAML file nor a profile "
                      f"(profiles: {', '.join(profiles())})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config (or the built-in defaults, the paper's settings, when ``path`` is None) and
    apply ``key=value`` overrides.

    Args:
        path: a YAML file or a profile name (see :func:`profiles`).
        overrides: items like ``train.epochs=3`` or ``model.top_k=1``; values are parsed as YAML.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must be a mapping of sections")
    given = dict(data["model"]) if isinstance(data.get("model"), dict) else {}
    overridden = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        data[section][name] = yaml.safe_load(raw)
        if section == "model":
            overridden.add(name)
    if given and isinstance(data.get("model"), dict):
        data["model"] = _switched_architecture(given, data["model"], overridden)
    return RunConfig.from_dict(data)


def _switched_architecture(given: dict[str, Any], model: dict[str, Any], overridden: set[str]) -> dict[str, Any]:
    """The ``model`` section after overrides, less the file's settings of its own architecture's family
    when an override chose an architecture of another (``--set model.architecture=patchcore`` on the
    ``cpu-feat`` profile drops its ``feature_moe`` settings, also those whose names the new family shares,
    such as ``memory_distance``: the file set them for its own architecture). A setting the overrides give
    stays, to be judged."""
    before = architecture(given.get("architecture", ModelConfig.architecture))
    after = architecture(model.get("architecture", ModelConfig.architecture))
    if after.settings is before.settings:  # the same architecture, or one of the same family
        return model
    return {k: v for k, v in model.items() if k not in before.settings.names() or k in overridden}


def with_text_dim(config: RunConfig, text_dim: int) -> RunConfig:
    """The config with the model's ``text_dim`` set to the text encoder's embedding size."""
    return replace(config, model=replace(config.model, text_dim=text_dim))


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(known)}")
    hints = get_type_hints(cls)
    try:
        return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})
    except TypeError as exc:
        raise ConfigError(f"invalid {section} settings: {exc}") from exc


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Cast YAML scalars to the field's type (YAML reads ``1e-3`` as a string, ``5`` as an int)."""
    if isinstance(value, list):
        return tuple(value)
    try:
        if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, str):
            return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    return value
