"""Detectors: one module per detector, each comparing events with the agent models and returning
findings. Detectors never talk to Slack, SLS or the scheduler.

The package is walked once (pySigma style): every module holding a :class:`detectors.base.Detector`
subclass registers it. Ids must be unique, and config overrides
(``detectors: {failure_storm: {threshold: 20}}``) are checked against each detector's declared
parameters: an unknown detector or key is a usage error naming the config key.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from detectors.base import Detector
from pipeline.core.errors import UsageError


@cache
def registry() -> dict[str, type[Detector]]:
    found: dict[str, type[Detector]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Detector) and value is not Detector \
                    and value.__module__ == module.__name__:
                if value.id in found:
                    raise RuntimeError(f"detector id {value.id!r} is declared twice")
                found[value.id] = value
    return dict(sorted(found.items()))


def build(overrides: dict[str, dict[str, Any]], config_path: str | None = None) -> list[Detector]:
    """Instantiate every registered detector with its config overrides, validated; ``enabled: false``
    leaves one out."""
    known = registry()
    for name in overrides:
        if name not in known:
            raise UsageError(f"unknown detector (known: {', '.join(known)})", path=config_path,
                             key=f"detectors.{name}")
    out = []
    for name, cls in known.items():
        params = dict(overrides.get(name) or {})
        enabled = params.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise UsageError(f"must be true or false, not {enabled!r}", path=config_path,
                             key=f"detectors.{name}.enabled")
        if not enabled:
            continue
        try:
            out.append(cls(**params))
        except KeyError as exc:
            allowed = ", ".join([*cls.parameters, "enabled"])
            raise UsageError(f"unknown parameter (allowed: {allowed})", path=config_path,
                             key=f"detectors.{name}.{exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc), path=config_path, key=f"detectors.{name}") from None
    return out
