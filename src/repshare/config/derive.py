"""Config schemas derived from the science dataclasses, so a group's keys are defined once.

A topic package describes its settings as a plain dataclass (``GeneratorParams``, ``PlacementSettings``,
...) whose defaults serve direct Python callers. :func:`schema_of` turns it into the config schema of
its group: the same field names and types, no values (the values live in ``conf/``, see
:mod:`repshare.config.schema`), fields that are not config keys dropped, nested settings replaced by
their own derived schemas. :func:`science_from` goes the other way: the group's values as the science
dataclass (lists become tuples where the field is a tuple).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


def schema_of(science: type, *, drop: Iterable[str] = (), nested: Mapping[str, type] | None = None,
              name: str | None = None) -> type:
    """A dataclass with ``science``'s fields (minus ``drop``) and types, and no defaults.

    ``nested``: field -> the derived schema to use instead of the field's own dataclass type.
    A name in ``drop`` or ``nested`` that ``science`` does not have raises TypeError (a stale list)."""
    drop, nested = set(drop), dict(nested or {})
    hints = typing.get_type_hints(science)
    names = [f.name for f in dataclasses.fields(science)]
    stale = sorted((drop | set(nested)) - set(names))
    if stale:
        raise TypeError(f"{science.__name__} has no field {stale[0]!r} (drop/nested list is stale)")
    rows = [(n, nested.get(n, _config_type(hints[n]))) for n in names if n not in drop]
    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    schema = dataclasses.make_dataclass(name or f"{science.__name__}Schema", rows)
    schema.__module__ = caller  # where it is defined for readers (and pickling), not dataclasses
    schema.__doc__ = f"Config schema of :class:`{science.__module__}.{science.__qualname__}` (derived)."
    schema.science = science
    return schema


def _config_type(tp: Any) -> Any:
    """``tuple[X, ...]`` becomes ``list[X]`` (YAML lists); everything else stays as it is."""
    if typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return list[args[0]] if args else list
    return tp


def science_from(science: type, values: Mapping[str, Any] | DictConfig, **given: Any) -> Any:
    """``science(**values)``: lists become tuples where the field is a tuple, nested dataclasses are
    built the same way; ``given`` fields win (e.g. ones that are not config keys)."""
    if isinstance(values, DictConfig):
        values = OmegaConf.to_container(values, resolve=True)
    hints = typing.get_type_hints(science)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(science):
        if f.name in given or f.name not in values:
            continue
        v, tp = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(v, Mapping):
            v = science_from(tp, v)
        elif typing.get_origin(tp) is tuple and isinstance(v, list):
            v = tuple(v)
        kw[f.name] = v
    return science(**kw, **given)
