"""The generation paths, one file per writer kind. Every module of this package is imported here, so a
new kind is one new file whose class registers itself with ``@WRITERS.register(ItsSettings)``."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
