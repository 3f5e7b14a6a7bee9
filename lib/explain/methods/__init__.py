"""One module per explanation method; importing this package registers them all in the catalogue.

A module here defines (or imports) how its method is computed and calls
:func:`lib.explain.catalogue.register` once with its :class:`~lib.explain.catalogue.Method` entry. Every
module of the package is imported, so a new method is one new file.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
