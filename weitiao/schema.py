"""The base of every config section (kept apart from config.py so that task modules, which
declare their own `task:` section, can import it without importing the whole schema)."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every section: unknown keys are refused, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
