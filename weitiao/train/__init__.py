"""Training: the recipe (setup -> train -> finish), the loop, checkpoints, the feature cache.

`weitiao.train(config, ...)` is also the Python API's entry point (weitiao/api.py). A package
and a function cannot both be the attribute `weitiao.train`, so this package is callable: its
module class forwards a call to `weitiao.api.train`. `import weitiao.train.loop` keeps working.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, config, name=None, overrides=None, overwrite=False):
        """weitiao.train(config, name=None, overrides=None, overwrite=False) -> Run (see weitiao.api.train)."""
        from weitiao.api import train

        return train(config, name=name, overrides=overrides, overwrite=overwrite)


sys.modules[__name__].__class__ = _CallablePackage
