"""The config reference names every key of the schema, so docs cannot silently fall behind."""

from helpers import ROOT
from pydantic import BaseModel

from weitiao.config import RunConfig


def all_fields(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= all_fields(field.annotation)
    return names


def test_config_doc_lists_every_key():
    doc = (ROOT / "docs" / "config.md").read_text()
    missing = sorted(k for k in all_fields(RunConfig) if f"`{k}`" not in doc)
    assert not missing, f"docs/config.md does not mention: {missing}"
