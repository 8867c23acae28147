"""The parameter selector: which parameters learn. One file per method, one table (`STRATEGIES`).

A method is a function `select(model, spec) -> Selection`; `spec` is the validated
`strategy` config section. It sets `requires_grad` (or wraps the model, for peft methods)
and may return a hook that changes the trainable set as training goes on.

Options beside `method` that only some methods use are listed at registration; a config
that sets an option its method ignores is refused, so a typo'd method never silently
trains something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from weitiao.errors import UserError, add_to, load_plugins, unknown

STRATEGIES: dict[str, "Method"] = {}

# Options every method accepts: the gradient controller, the regularizer, name patterns.
COMMON = {"method", "include", "exclude", "freeze_embeddings", "layer_lr_decay", "head_lr", "head_fit", "lr_overrides",
          "l2sp", "l2sp_beta", "dropout", "label_smoothing", "probe"}


@dataclass
class Selection:
    """What a method returns.

    model: the model to train (peft methods return a wrapped model).
    on_progress: optional `(epoch, step) -> bool` called before every optimizer step;
        returns True when it changed the trainable set (gradual unfreezing).
    all_trainable_later: parameters that may learn at some point (the optimizer holds them
        from the start, so newly unfrozen ones get the scheduled LR at once).
    peft: the model is a peft model (saved as adapter/ plus a merged model/).
    """

    model: object
    on_progress: Callable[[int, int], bool] | None = None
    all_trainable_later: list = field(default_factory=list)
    peft: bool = False


@dataclass
class Method:
    select: Callable
    options: frozenset
    peft: bool = False  # wraps the model with peft (name patterns do not apply)


def register(name: str, options: tuple[str, ...] = (), peft: bool = False):
    """Decorator: add a method under `name` with the options it reads; duplicates are refused."""

    def add(fn: Callable) -> Callable:
        add_to(STRATEGIES, name, Method(fn, frozenset(options), peft), "strategy")
        return fn

    return add


# The methods' modules: importing one registers it. Loaded by name, so that plug-ins import this
# registry and never the reverse (the layers contract counts no cycle here).
PLUGINS = ("adapter", "freeze_bottom", "full", "gradual_unfreeze", "head_only", "peft_methods", "train_top")


def load_all() -> dict[str, Method]:
    load_plugins(__name__, PLUGINS)
    return STRATEGIES


def get_strategy(spec) -> Method:
    """The registered method for `spec.method`, after checking the options set beside it."""
    load_all()
    if spec.method not in STRATEGIES:
        raise unknown("strategy.method", "strategy", spec.method, STRATEGIES)
    method = STRATEGIES[spec.method]
    # Only options changed from their default count: a resolved config lists every option.
    changed = {k for k in spec.model_fields_set if getattr(spec, k) != type(spec).model_fields[k].default}
    for key in sorted(changed - COMMON - method.options):
        users = sorted(n for n, m in STRATEGIES.items() if key in m.options)
        raise UserError(f"strategy.{key}", f"is not used by method '{spec.method}'", f"remove it, or use it with {', '.join(users) or 'another method'}")
    if method.peft:
        for key in ("include", "exclude", "freeze_embeddings"):
            if getattr(spec, key):
                raise UserError(f"strategy.{key}", f"name patterns do not apply to the peft method '{spec.method}'",
                                "choose the adapted modules with strategy.target_modules instead")
    return method


def apply_strategy(model, spec, task_type: str = "SEQ_CLS") -> Selection:
    """Run the configured method, then the name-pattern modifiers (for non-peft methods).

    `task_type`: peft's name for the task (`Task.peft_task_type`), for the peft methods.
    """
    method = get_strategy(spec)
    selection = method.select(model, spec, task_type=task_type) if method.peft else method.select(model, spec)
    if not selection.peft:
        apply_patterns(selection.model, spec.include, spec.exclude, spec.freeze_embeddings)
    return selection


def apply_patterns(model, include: list[str], exclude: list[str], freeze_embeddings: bool) -> None:
    """`include` regexes unfreeze, `exclude` regexes (and embeddings) freeze; exclude wins."""
    from weitiao.models.layers import find_parts

    compiled = {}
    for key, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            try:
                compiled.setdefault(key, []).append(re.compile(pattern))
            except re.error as e:
                raise UserError(f"strategy.{key}", f"'{pattern}' is not a valid regex ({e})", "fix the pattern (Python re syntax)") from None
    names = [n for n, _ in model.named_parameters()]
    for key, regexes in compiled.items():
        for rx in regexes:
            if not any(rx.search(n) for n in names):
                raise UserError(f"strategy.{key}", f"'{rx.pattern}' matches no parameter", f"parameter names look like '{names[len(names) // 2]}'")
    embeddings = tuple(find_parts(model).embeddings) if freeze_embeddings else ()
    for name, p in model.named_parameters():
        if any(rx.search(name) for rx in compiled.get("include", [])):
            p.requires_grad_(True)
        if any(rx.search(name) for rx in compiled.get("exclude", [])) or (embeddings and name.startswith(embeddings)):
            p.requires_grad_(False)


def set_trainable(model, predicate: Callable[[str], bool]) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(bool(predicate(name)))
