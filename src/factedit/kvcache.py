"""The KV-cache names of transformers, old and new, in one place.

    name = cache_argument(model)                 # "cache" or "past_key_values"
    out = model(input_ids=ids, use_cache=True)
    model(input_ids=next_ids, use_cache=True, **{name: output_cache(out)})

Some transformers 5.x versions renamed the forward argument and the output field
``past_key_values`` to ``cache``; older and other versions keep ``past_key_values``. Both
helpers accept either, so callers never spell the name themselves.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, overload

from torch import nn

#: The two names a KV cache goes by, newest first.
CACHE_NAMES: tuple[str, ...] = ("cache", "past_key_values")


@functools.cache
def _forward_cache_argument(model_cls: type) -> str | None:
    """The first of :data:`CACHE_NAMES` that ``model_cls.forward`` declares, else None."""
    params = inspect.signature(model_cls.forward).parameters
    return next((name for name in CACHE_NAMES if name in params), None)


@overload
def cache_argument(model: nn.Module, *, default: str = ...) -> str: ...
@overload
def cache_argument(model: nn.Module, *, default: None) -> str | None: ...


def cache_argument(model: nn.Module, *, default: str | None = "past_key_values") -> str | None:
    """The keyword of ``model``'s forward that takes a KV cache.

    ``"cache"`` or ``"past_key_values"``, whichever the model's class declares (looked up once
    per class); ``default`` when it declares neither (pass ``default=None`` to learn whether
    the model takes a cache at all).
    """
    found = _forward_cache_argument(type(model))
    return default if found is None else found


def output_cache(output: Any) -> Any | None:
    """The KV cache a forward pass returned (``output.cache`` or ``output.past_key_values``).

    None when the output carries no cache (``use_cache=False``, or a model without one).
    """
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
