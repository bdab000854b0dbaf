"""A registry of model architectures, timm-style: ``create_model(config)``.

Every registered model maps ``(x (B, C, R, R), text_embedding (B, D) | None)`` to a
:class:`~medmoe.model.moe.ModelOutput`, so training, evaluation, export and detection treat the
paper's model and the baselines alike. Baselines register themselves on import of
:mod:`medmoe.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medmoe.errors import ConfigError
from medmoe.model.config import ModelConfig

ModelFactory = Callable[[ModelConfig], nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory ``ModelConfig -> nn.Module`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = factory
        return factory

    return decorate


def create_model(config: ModelConfig) -> nn.Module:
    """Build the model named by ``config.architecture``."""
    import medmoe.baselines  # noqa: F401  (registers the baselines)

    try:
        factory = MODELS[config.architecture]
    except KeyError:
        raise ConfigError(f"unknown architecture {config.architecture!r}; "
                          f"known: {', '.join(sorted(MODELS))}") from None
    return factory(config)


@register_model("moe")
def _prompt_moe(config: ModelConfig) -> nn.Module:
    from medmoe.model.moe import PromptMoE

    return PromptMoE(config)


@register_model("feature_moe")
def _feature_moe(config: ModelConfig) -> nn.Module:
    from medmoe.model.feature_moe import FeatureMoE

    return FeatureMoE(config)
