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

from collections.abc import Callable
from dataclasses import dataclass

from medmoe.errors import ConfigError
from medmoe.model.base import AnomalyModel
from medmoe.model.config import ModelConfig

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
    """

    name: str
    factory: ModelFactory
    experts_per_task: bool = False
    adds_tasks: bool = False


ARCHITECTURES: dict[str, Architecture] = {}


def register_model(name: str, *, experts_per_task: bool = False,
                   adds_tasks: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory (or a model class) ``ModelConfig -> nn.Module`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in ARCHITECTURES:
            raise ValueError(f"model {name!r} is registered twice")
        ARCHITECTURES[name] = Architecture(name, factory, experts_per_task=experts_per_task, adds_tasks=adds_tasks)
        return factory

    return decorate


def architecture(name: str) -> Architecture:
    """The registry entry of ``name``.

    Raises:
        ConfigError: no such architecture.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def create_model(config: ModelConfig) -> AnomalyModel:
    """Build the model named by ``config.architecture``."""
    return architecture(config.architecture).factory(config)
