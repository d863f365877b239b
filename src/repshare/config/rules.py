"""Range checks as data: each config group declares a table of ``(key, rule, rule, ...)`` rows and one
engine, :func:`check_table`, applies them to the composed config.

A failing rule raises :class:`ConfigError` with one line in the project's style::

    config value <key>=<value> is invalid: <why>

Keys are dotted paths from the config root. ``*`` stands for every key of a mapping (``train.*.lr``),
``[*]`` for every item of a list (``workload.models[*].name``); the message names the concrete key
(``train.detector.lr``, ``workload.models[1].name``). A key whose parent is absent or null is skipped:
an adapter that was not chosen, a field of another data source (``data.difficulty`` under ImageNet).
A test checks that every key in every table exists in the schema, so a misspelt key cannot slip by.

Rules on a key run in order; the first failure is reported. A cross-field check that is not a simple
rule is a :class:`Check` around a small function ``fn(value, root) -> why | None`` in the same table.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config value is missing, misspelt, of the wrong type or out of range."""


def invalid(key: str, value: Any, why: str) -> ConfigError:
    """The one message format of a bad value (tests and users grep ``<key>=<value>``)."""
    return ConfigError(f"config value {key}={value!r} is invalid: {why}")


def plain(value: Any) -> Any:
    """A config node as plain Python (lists, dicts), so messages and rules see ordinary values."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class Tree(dict):
    """The composed config as plain dicts and lists with attribute access (``root.data.name``), which is what
    cross-field checks read: an order of magnitude faster than walking the config node."""

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self[name])
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: Any) -> Any:
        return _wrap(dict.__getitem__(self, name))

    def select(self, key: str) -> Any:
        """The value at a dotted key (``a.b[2].c``), or None where a part is absent."""
        node: Any = self
        for kind, name in _tokens(key):
            if kind == "key" and isinstance(node, dict) and name in node:
                node = dict.__getitem__(node, name)
            elif kind == "item" and isinstance(node, list) and isinstance(name, int) and 0 <= name < len(node):
                node = node[name]
            else:
                return None
        return _wrap(node)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Tree):
        return Tree(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------- rules
class Rule:
    """A check of one value. A simple rule gives ``why(value, root, key)``: None when fine, else the reason;
    a rule over parts of the value (``Each``, ``Keys``, ...) overrides ``check`` and raises itself."""

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        raise NotImplementedError

    def check(self, key: str, value: Any, root: Tree) -> None:
        reason = self.why(value, root, key)
        if reason is not None:
            raise invalid(key, value, reason)

    @property
    def simple(self) -> bool:
        return type(self).check is Rule.check


class Interval(Rule):
    """A finite number in [lo, hi]; ``open_low`` / ``open_high`` exclude the bound; None: unbounded."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, open_low: bool = False,
                 open_high: bool = False):
        self.lo, self.hi, self.open_low, self.open_high = lo, hi, open_low, open_high

    def text(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"must be in {'(' if self.open_low else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.open_high else ']'}")
        if self.lo is not None:
            return f"must be {'>' if self.open_low else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"must be {'<' if self.open_high else '<='} {_num(self.hi)}"
        return "must be a finite number"

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        if not _is_number(value) or not math.isfinite(value):
            return f"{self.text()} (a finite number)" if self.lo is not None or self.hi is not None \
                else self.text()
        lo_bad = self.lo is not None and (value <= self.lo if self.open_low else value < self.lo)
        hi_bad = self.hi is not None and (value >= self.hi if self.open_high else value > self.hi)
        return self.text() if lo_bad or hi_bad else None


def Positive() -> Interval:  # noqa: N802 (reads like the other rules in a table)
    """A finite number > 0."""
    return Interval(0, open_low=True)


def Fraction(*, open_low: bool = False, open_high: bool = False) -> Interval:  # noqa: N802
    """A number in [0, 1] (bounds excluded on request)."""
    return Interval(0, 1, open_low=open_low, open_high=open_high)


class IntRange(Rule):
    """An integer (not a bool) in [lo, hi]; None: unbounded on that side."""

    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        ok = _is_int(value) and (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        if ok:
            return None
        if self.lo is not None and self.hi is not None:
            return f"must be an integer in [{self.lo}, {self.hi}]"
        if self.lo is not None:
            return f"must be an integer >= {self.lo}"
        return f"must be an integer <= {self.hi}" if self.hi is not None else "must be an integer"


class OneOf(Rule):
    """One of the listed values."""

    def __init__(self, *choices: Any):
        self.choices = choices

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        ok = any(value == c and type(value) is type(c) for c in self.choices)
        return None if ok else f"must be one of {', '.join(map(str, self.choices))}"


class NonEmpty(Rule):
    """A non-empty list, mapping or string (a string of spaces is empty)."""

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        if value is None:
            return "must not be empty (null)"
        if isinstance(value, str):
            return None if value.strip() else "must not be empty"
        return None if len(value) > 0 else "must not be empty"


class Unique(Rule):
    """A list without repeated values."""

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        seen: list[Any] = []
        for v in value:
            if v in seen:
                return f"lists {v!r} twice"
            seen.append(v)
        return None


IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


class Identifier(Rule):
    """A name that becomes a file, folder or page name: letters, digits, ``_`` and ``-`` (at most 64, not
    starting with ``-``), so it can never be a path (``..``, ``/``) or a URL scheme (``javascript:``)."""

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        if isinstance(value, str) and IDENTIFIER.fullmatch(value):
            return None
        return "must be a name of letters, digits, '_' and '-' (at most 64, not starting with '-'): it becomes " \
               "a file or page name"


class Length(Rule):
    """A list with between ``lo`` and ``hi`` items (``Length(3)``: exactly 3)."""

    def __init__(self, lo: int, hi: int | None = -1):
        self.lo, self.hi = lo, lo if hi == -1 else hi

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        n = len(value)
        if n >= self.lo and (self.hi is None or n <= self.hi):
            return None
        if self.hi == self.lo:
            return f"must hold exactly {self.lo} values"
        return f"must hold at least {self.lo} values" if self.hi is None else \
            f"must hold {self.lo} to {self.hi} values"


class Device(Rule):
    """A torch device name: auto (a GPU when one is visible, else the CPU), cpu, cuda, cuda:<n> or mps."""

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        ok = isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?|mps", value)
        return None if ok else "must be auto, cpu, cuda, cuda:<index> or mps"


class Check(Rule):
    """A cross-field check: ``fn(value, root)`` -- or ``fn(value, root, key)`` when it needs the concrete key
    to find its siblings -- returns why the value is wrong, or None."""

    def __init__(self, fn: Callable[..., str | None]):
        self.fn = fn
        self.wants_key = len(inspect.signature(fn).parameters) >= 3

    def why(self, value: Any, root: Tree, key: str = "") -> str | None:
        return self.fn(value, root, key) if self.wants_key else self.fn(value, root)


def sibling(root: Tree, key: str, name: str) -> Any:
    """The value of ``name`` beside ``key`` (``sibling(root, "model.detector.weights", "pretrained")``)."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    return root.select(f"{parent}.{name}" if parent else name)


class OrNull(Rule):
    """None is fine; anything else must pass ``rules`` (the message adds "or null")."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def check(self, key: str, value: Any, root: Tree) -> None:
        if value is None:
            return
        for r in self.rules:
            reason = r.why(value, root, key) if r.simple else r.check(key, value, root)
            if reason is not None:
                raise invalid(key, value, f"{reason} or null")


class Each(Rule):
    """Every item of a list passes ``rules``; the message names the offending item as the value."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def check(self, key: str, value: Any, root: Tree) -> None:
        if not isinstance(value, (list, tuple)):
            raise invalid(key, value, "must be a list")
        for item in value:
            for r in self.rules:
                r.check(key, item, root)


class Keys(Rule):
    """Every key of a mapping passes ``rules`` (the message names the key as the value)."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def check(self, key: str, value: Any, root: Tree) -> None:
        for k in value:
            for r in self.rules:
                r.check(key, k, root)


class Values(Rule):
    """Every value of a mapping passes ``rules`` (the message names ``<key>.<entry>``)."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def check(self, key: str, value: Any, root: Tree) -> None:
        for k, v in value.items():
            for r in self.rules:
                r.check(f"{key}.{k}", v, root)


class When(Rule):
    """``rules`` apply only where ``condition(root)`` holds (e.g. a bound that depends on the data source)."""

    def __init__(self, condition: Callable[[Tree], bool], *rules: Rule):
        self.condition, self.rules = condition, rules

    def check(self, key: str, value: Any, root: Tree) -> None:
        if self.condition(root):
            for r in self.rules:
                r.check(key, value, root)


class Builds(Rule):
    """``build(value)`` -- a science dataclass built from the group's values, with its own checks -- accepts
    them: a backstop, so compose refuses everything the stage would refuse later."""

    def __init__(self, build: Callable[[Any], Any]):
        self.build = build

    def check(self, key: str, value: Any, root: Tree) -> None:
        try:
            self.build(value)
        except (ValueError, TypeError) as err:  # the science message names the key and value itself
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"config value {key} is invalid: {why}") from None


# --------------------------------------------------------------------------- the engine
Row = tuple  # (key pattern, rule, rule, ...)
Table = Sequence[Row]
_TOKEN = re.compile(r"\[(\*|\d+)\]|([^.\[\]]+)")


def _tokens(pattern: str) -> list[tuple[str, Union[str, int]]]:
    out: list[tuple[str, Union[str, int]]] = []
    for m in _TOKEN.finditer(pattern):
        if m.group(1) is not None:
            out.append(("item", "*" if m.group(1) == "*" else int(m.group(1))))
        else:
            out.append(("key", m.group(2)))
    return out


def expand(tree: Any, pattern: str) -> Iterator[tuple[str, Any]]:
    """(concrete key, value) for every place ``pattern`` matches in ``tree`` (plain dicts and lists, or a
    config node); absent or null parents match nothing."""
    tree = plain(tree)
    tokens = _tokens(pattern)
    get = dict.__getitem__  # the plain value, also inside a Tree

    def walk(node: Any, i: int, path: str) -> Iterator[tuple[str, Any]]:
        if i == len(tokens):
            yield path, node
            return
        kind, name = tokens[i]
        if kind == "key":
            if not isinstance(node, dict):
                return
            for k in (list(node) if name == "*" else [name]):
                if k in node:
                    yield from walk(get(node, k), i + 1, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for j in (range(len(node)) if name == "*" else [name]):
                if 0 <= j < len(node):
                    yield from walk(node[j], i + 1, f"{path}[{j}]")

    yield from walk(tree, 0, "")


def check_table(config: DictConfig | dict, table: Iterable[Row]) -> None:
    """Apply every row of ``table`` to ``config``; the first failing rule raises ConfigError naming the key.
    Rules see plain values; cross-field checks also get the whole config as a :class:`Tree`."""
    root = Tree(plain(config))
    for pattern, *rules in table:
        for key, value in expand(root, pattern):
            for rule in rules:
                rule.check(key, value, root)
