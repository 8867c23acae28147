"""Strategies: which parameters learn. One file each, registered by name in `STRATEGIES`.

A strategy is a function `select(model, spec) -> None` that sets `requires_grad` on the
model's parameters; `spec` is the validated `strategy` config section.
"""

from __future__ import annotations

from typing import Callable

STRATEGIES: dict[str, Callable] = {}


def register(name: str):
    """Decorator: add a strategy under `name`; a second strategy with the same name is refused."""

    def add(fn: Callable) -> Callable:
        if name in STRATEGIES:
            raise ValueError(f"strategy '{name}' is registered twice")
        STRATEGIES[name] = fn
        return fn

    return add


def get_strategy(name: str) -> Callable:
    from weitiao.errors import UserError
    import difflib

    _load_all()
    if name not in STRATEGIES:
        match = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        hint = f"did you mean '{match[0]}'?" if match else f"use one of {sorted(STRATEGIES)}"
        raise UserError("strategy.method", f"unknown strategy '{name}'", hint)
    return STRATEGIES[name]


def _load_all() -> None:
    # Importing a strategy module registers it; the list is the one place that names them.
    from weitiao.strategies import freeze_bottom, full, head_only  # noqa: F401
