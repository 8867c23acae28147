"""weitiao (微调): a fine-tuning controller for pretrained models.

Importing the package is cheap on purpose: torch, transformers and friends load only
inside the functions that need them, so `weitiao --help` stays fast. The Python API
(`weitiao.train`, `weitiao.load`, `weitiao.WeitiaoError`) is in weitiao/api.py.
"""

from weitiao.version import __version__  # noqa: F401


def __getattr__(name: str):
    if name == "train":  # the package weitiao/train is callable: weitiao.train(config, ...) trains
        import importlib

        return importlib.import_module("weitiao.train")
    if name in ("load", "Run", "WeitiaoError"):
        from weitiao import api

        return getattr(api, name)
    raise AttributeError(f"module 'weitiao' has no attribute {name!r}")
