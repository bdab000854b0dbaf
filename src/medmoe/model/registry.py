"""A registry of model architectures, timm-style: ``create_model(config)``.

Every registered model maps ``(x (B, C, R, R), text_embedding (B, D) | None)`` to a
:class:`~medmoe.model.output.ModelOutput`, so training, evaluation, export and detection treat the
paper's model and the baselines alike. Each architecture module registers itself with
:func:`register_model`, and :mod:`medmoe.model` imports every one of them (as timm's
``models/__init__.py`` does), so importing anything from the package fills the registry; nothing
here imports a model module back. What an architecture fixes that the engine must know is declared
in its :class:`Architecture` entry, read by :func:`architecture` — never by testing its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medmoe.errors import ConfigError
from medmoe.model.base import AnomalyModel
from medmoe.model.config import LEGACY_ARCHITECTURES, ArchitectureSettings, ModelConfig

ModelFactory = Callable[[ModelConfig], AnomalyModel]


@dataclass(frozen=True)
class Architecture:
    """One registered architecture and what it fixes.

    Attributes:
        name: the ``model.architecture`` value.
        factory: ``ModelConfig -> nn.Module``.
        experts_per_task: its routing loss pairs task ``i`` with expert ``i``, so it needs
            ``model.num_experts`` ≥ the number of tasks.
        adds_tasks: ``medmoe add-task`` can grow a trained model of it.
        settings: its family's own settings record (:class:`ArchitectureSettings`: none).
        fixes: the :class:`ModelConfig` settings it cannot change (``{"prompt": False}`` for a
            baseline without a prompt encoder): :meth:`check` refuses another value, and
            :meth:`overrides` spells them for a config.
        train_defaults: training settings it needs unless a config says otherwise (``{"selection":
            "last"}`` where the validation loss cannot rank epochs), applied by
            :meth:`medmoe.engine.config.RunConfig.from_dict`.
    """

    name: str
    factory: ModelFactory
    experts_per_task: bool = False
    adds_tasks: bool = False
    settings: type[ArchitectureSettings] = ArchitectureSettings
    fixes: Mapping[str, bool] = field(default_factory=dict)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)

    def check(self, config: ModelConfig) -> None:
        """Raise :class:`ConfigError` naming every fixed setting ``config`` gives another value, or
        for another family's settings."""
        config.settings_as(self.settings)
        wrong = [f"model.{key}: {str(value).lower()}" for key, value in self.fixes.items()
                 if getattr(config, key) != value]
        if wrong:
            raise ConfigError(f"architecture {self.name!r} needs {', '.join(wrong)}; set "
                              f"{'them' if len(wrong) > 1 else 'it'} so (e.g. --set {wrong[0].replace(': ', '=')})")

    def overrides(self, **free: bool) -> tuple[str, ...]:
        """``section.field=value`` items selecting this architecture with its fixed settings, and
        values for settings it leaves free (``prompt=True``)."""
        settings = {**free, **self.fixes}
        return (f"model.architecture={self.name}", *(f"model.{k}={str(v).lower()}" for k, v in settings.items()))


ARCHITECTURES: dict[str, Architecture] = {}


def register_model(name: str, *, experts_per_task: bool = False, adds_tasks: bool = False,
                   settings: type[ArchitectureSettings] = ArchitectureSettings,
                   fixes: Mapping[str, bool] | None = None,
                   train_defaults: Mapping[str, Any] | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory (or a model class) ``ModelConfig -> nn.Module`` under ``name``
    (the keywords are :class:`Architecture`'s attributes)."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in ARCHITECTURES:
            raise ValueError(f"model {name!r} is registered twice")
        if shadowed := settings.names() & ModelConfig.common_names():
            raise ValueError(f"{settings.__name__} redefines common model settings {sorted(shadowed)}")
        ARCHITECTURES[name] = Architecture(name, factory, experts_per_task=experts_per_task, adds_tasks=adds_tasks,
                                           settings=settings, fixes=dict(fixes or {}),
                                           train_defaults=dict(train_defaults or {}))
        return factory

    return decorate


def architecture(name: str) -> Architecture:
    """The registry entry of ``name``.

    Raises:
        ConfigError: no such architecture.
    """
    try:
        return ARCHITECTURES[LEGACY_ARCHITECTURES.get(name, name)]  # an earlier version's name works too
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def create_model(config: ModelConfig) -> AnomalyModel:
    """Build the model named by ``config.architecture``.

    Raises:
        ConfigError: an unknown architecture, or a setting it fixes given another value.
    """
    entry = architecture(config.architecture)
    entry.check(config)
    return entry.factory(config)


def model_config(data: Mapping[str, Any], *, stored: bool = False) -> ModelConfig:
    """A :class:`ModelConfig` from the flat ``model`` section of a config or checkpoint (inverse of
    :meth:`ModelConfig.to_dict`): the common fields, and the rest as the architecture's settings record.

    Args:
        data: setting name → value (lists for tuples); ``architecture`` defaults to ``pixel_moe``.
        stored: ``data`` was written by medmoe (a checkpoint, a resume file, a benchmark's record). Versions
            up to 0.2.0 stored every family's settings in one record; those of other families are dropped
            rather than refused.

    Raises:
        ConfigError: an unknown architecture, a setting it does not read, or an invalid value.
    """
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    entry = architecture(values.pop("architecture", ModelConfig.architecture))
    own, common = entry.settings.names(), ModelConfig.common_names()
    foreign = set(values) - own - common
    if stored:
        foreign -= {name for other in ARCHITECTURES.values() for name in other.settings.names()}
    if foreign:
        owners = {name: sorted(a.name for a in ARCHITECTURES.values() if name in a.settings.names())
                  for name in sorted(foreign)}
        said = "; ".join(f"model.{name} belongs to {', '.join(o)}, not {entry.name}" if o
                         else f"model.{name} is unknown" for name, o in owners.items())
        raise ConfigError(f"{said}; {entry.name} reads: {', '.join(sorted(own | common))}")
    try:
        settings = entry.settings(**{k: v for k, v in values.items() if k in own})
        return ModelConfig(architecture=entry.name, settings=settings,
                           **{k: v for k, v in values.items() if k in common})
    except TypeError as exc:
        raise ConfigError(f"invalid model settings: {exc}") from exc
