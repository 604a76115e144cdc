"""The imaging model registry: ``create_model("penet_50", **overrides)``.

A model family registers its constructors with ``@register_model``; :data:`FAMILIES` names the
modules that hold them, imported the first time a model is asked for. Adding a model is one
decorated function, and, for a new family, one entry in :data:`FAMILIES`. The families import
this module, never the reverse, so there is no import circle.

>>> create_model("penet_tiny").__class__.__name__
'PENet'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from radfusion.data.findings import suggest
from radfusion.errors import RadfusionError

__all__ = ["FAMILIES", "MODELS", "create_model", "model_names", "register_model"]

#: The modules whose import registers their models.
FAMILIES = ("radfusion.imaging.penet", "radfusion.imaging.slicenet")

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; ``fn(**overrides)`` builds the model."""
    if fn.__name__ in MODELS and MODELS[fn.__name__] is not fn:
        raise ValueError(f"two models named {fn.__name__!r}")
    MODELS[fn.__name__] = fn
    return fn


def model_names() -> list[str]:
    for family in FAMILIES:
        importlib.import_module(family)
    return sorted(MODELS)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace fields of its config."""
    known = model_names()
    if name not in MODELS:
        raise RadfusionError(f"unknown model {name!r}{suggest(name, known)}; known: {known}")
    return MODELS[name](**overrides)
