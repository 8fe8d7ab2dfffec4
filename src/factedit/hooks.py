"""Forward hooks by dotted module name — the only place factedit registers hooks.

    with Trace(model, "model.layers.5.mlp.down_proj", retain_input=True) as t:
        model(**batch)                      # t.input: the module's first positional input
    with TraceDict(model, names, edit_output=fn) as td:   # fn(output, name) -> new output
        model(**batch)                      # td[name].output
    Trace(..., stop=True) ends the forward pass right after the module (StopForward).

Hooks are always removed on exit, also when the body raises. A module whose output is a
tuple (some decoder layers) is handled through its first element.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

EditFn = Callable[[torch.Tensor, str], torch.Tensor]


class StopForward(Exception):
    """Raised by a hook with ``stop=True`` to end the forward pass early; caught on exit."""


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, new: torch.Tensor) -> Any:
    return (new, *value[1:]) if isinstance(value, tuple) else new


class Trace(contextlib.AbstractContextManager):
    """Hook one module: retain its input/output, optionally edit its output or input.

    Attributes after the forward pass: ``input`` (first positional input tensor) and
    ``output`` (the output tensor, first element when the module returns a tuple).
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        *,
        retain_input: bool = False,
        retain_output: bool = True,
        detach: bool = False,
        clone: bool = False,
        edit_output: EditFn | None = None,
        edit_input: EditFn | None = None,
        stop: bool = False,
    ) -> None:
        self.name = name
        self.input: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        module = model.get_submodule(name)

        def keep(t: torch.Tensor) -> torch.Tensor:
            if detach:
                t = t.detach()
            return t.clone() if clone else t

        def pre_hook(_m: nn.Module, args: tuple) -> tuple | None:
            if edit_input is None or not args:
                return None
            return (edit_input(args[0], name), *args[1:])

        def hook(_m: nn.Module, args: tuple, output: Any) -> Any:
            if retain_input and args:
                self.input = keep(args[0])
            if edit_output is not None:
                output = _replace_first(output, edit_output(_first(output), name))
            if retain_output:
                self.output = keep(_first(output))
            if stop:
                raise StopForward
            return output

        self._handles = [module.register_forward_hook(hook)]
        if edit_input is not None:
            self._handles.append(module.register_forward_pre_hook(pre_hook))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """A :class:`Trace` per name; ``stop=True`` stops after the *last* name in the list."""

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str],
        *,
        retain_input: bool = False,
        retain_output: bool = True,
        detach: bool = False,
        clone: bool = False,
        edit_output: EditFn | None = None,
        edit_input: EditFn | None = None,
        stop: bool = False,
    ) -> None:
        super().__init__()
        names = list(dict.fromkeys(names))
        try:
            for i, name in enumerate(names):
                self[name] = Trace(
                    model,
                    name,
                    retain_input=retain_input,
                    retain_output=retain_output,
                    detach=detach,
                    clone=clone,
                    edit_output=edit_output,
                    edit_input=edit_input,
                    stop=stop and i == len(names) - 1,
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for t in self.values():
            t.close()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def count_hooks(model: nn.Module) -> int:
    """Number of forward (pre-)hooks registered anywhere in ``model`` (tests: must be 0)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
