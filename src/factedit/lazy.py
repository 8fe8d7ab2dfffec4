"""Names a module exports or uses but imports only when first needed (they import torch).

    _heavy = LazyImports(globals(), {"load_model": "factedit.models.loading"})
    __getattr__ = _heavy.getattr        # module.load_model imports it on first access
    _heavy.load()                       # or: import every name now (a CLI command's first line)

This keeps ``factedit --help``, ``factedit edit validate`` and ``factedit models list`` free of
torch and transformers (``tests/unit/test_cli_startup.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any


class LazyImports:
    """Names a CLI module uses only when a command runs, imported then (not at start-up).

    ``_heavy = LazyImports(globals(), {"EditSession": "factedit.session", ...})`` in the module,
    ``__getattr__ = _heavy.getattr`` so that ``module.EditSession`` imports it on first access
    (tests monkeypatch such names), and a command calls ``_heavy.load()`` first: it puts every
    name that is not set yet into the module's globals (a monkeypatched one stays), so the
    function bodies use them as ordinary globals.
    """

    def __init__(self, namespace: MutableMapping[str, Any], names: Mapping[str, str]) -> None:
        self.namespace = namespace
        self.names = dict(names)

    def _import(self, name: str) -> Any:
        return getattr(importlib.import_module(self.names[name]), name)

    def load(self) -> None:
        for name in self.names:
            if name not in self.namespace:
                self.namespace[name] = self._import(name)

    def getattr(self, name: str) -> Any:
        if name not in self.names:
            module = self.namespace.get("__name__")
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = self.namespace[name] = self._import(name)
        return value
