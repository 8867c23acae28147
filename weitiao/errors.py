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
