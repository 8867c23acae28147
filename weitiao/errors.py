"""The one exception type for mistakes a user can fix.

The CLI prints a UserError as a single line and exits with code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's config, data or command line.

    Args:
        field: where the problem is (a config key such as ``data.train``, a file, an option).
        problem: what is wrong, naming the offending value.
        fix: what to do about it.
    """

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        """The message as one line: line breaks inside values (a path, a key) are escaped."""
        text = f"{self.field}: {self.problem}"
        text = f"{text}; fix: {self.fix}" if self.fix else text
        return text.replace("\r", "\\r").replace("\n", "\\n")


class TrainingStopped(Exception):
    """Training cannot go on (losses stopped being finite, out of memory, disk full).

    The message names where it stopped and what was kept; the CLI prints it as one line and
    exits with code 3.
    """


class Diverged(TrainingStopped):
    """The model's outputs stopped being finite (found when it is scored); the loop names the checkpoint to go back to."""


def add_to(table: dict, name: str, item, kind: str):
    """`table[name] = item` for one of weitiao's registries (tasks, strategies, export formats); a second
    item of the same name is refused (a programming mistake, not a user's)."""
    if name in table:
        raise ValueError(f"{kind} '{name}' is registered twice")
    table[name] = item
    return item


def load_plugins(package: str, names: tuple[str, ...]) -> None:
    """Import each plug-in module of a registry's package by name (importing one registers it): the
    plug-ins import their registry, never the reverse, so the layers check counts no cycle."""
    import importlib

    for name in names:
        importlib.import_module(f"{package}.{name}")


def unknown(field: str, kind: str, name, known) -> UserError:
    """The error for a name not in a registry: a did-you-mean when one is close, else the list."""
    import difflib

    match = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return UserError(field, f"unknown {kind} {name!r}", f"did you mean '{match[0]}'?" if match else f"use one of {', '.join(sorted(known))}")
