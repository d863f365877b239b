"""Guards on the config as text and as data, before anything resolves or acts on it.

- ``read_params``: params.yaml read with limits. A YAML alias ("billion laughs") expands each
  reference into a copy when OmegaConf builds its tree, so nine levels of nine aliases hang the reader;
  deep flow nesting (``[[[[...``) makes libyaml quadratic and its C composer overflow the stack. The
  size, the nesting and the expanded node count are checked on the text and on YAML's event stream
  (iterative, aliases counted by the size of what they point at) before any tree is built.
- ``forbid_resolvers``: no ``${name:...}`` resolver (``oc.env``, ``oc.decode``, ``now``, ``hydra``,
  any custom one) anywhere in an unresolved config. Every value reaches the W&B run's config and many
  reach the dashboard, so a resolver reading the environment would publish it. Plain interpolations
  (``${data.num_classes}``) stay allowed.
- ``forbid_env_secrets``: DVC's Hydra integration (``dvc exp run -S``) resolves the config before it
  writes params.yaml, so there the resolver is gone and only its value is left; a string value that
  holds the value of a secret-looking environment variable (name with TOKEN, SECRET, PASSWORD, API_KEY,
  ...) is refused, naming the key and the variable, never the value.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.config import ConfigError

MAX_PARAMS_BYTES = 1 << 20  # params.yaml is ~8 KB; a megabyte is far beyond any real config
MAX_NODES = 100_000  # scalars + collections after alias expansion (params.yaml has ~700)
MAX_DEPTH = 64  # nesting of collections (params.yaml: 5)
# Names of variables that hold secrets (WANDB_API_KEY, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, ...); not a bare
# AUTH or PRIVATE, which also match paths such as SSH_AUTH_SOCK and XAUTHORITY.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 8  # shorter values (a flag, "1", "true") would match innocent text


def _flow_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in the text (brackets inside strings count too: a bound, not a parse)."""
    depth = deepest = 0
    for m in re.finditer(r"[\[\]{}]", text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


def check_yaml_limits(text: str, name: str) -> None:
    """Raise ConfigError when ``text`` expands beyond MAX_NODES nodes or MAX_DEPTH levels, or has a recursive alias."""
    import yaml

    if _flow_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{name} nests more than {MAX_DEPTH} levels of brackets; recompose it with "
                          "`python pipelines/compose.py`")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, depth) of the node it names
    stack: list[list[Any]] = [[0, 0, None]]  # per open collection: [nodes, deepest child depth, anchor]
    try:
        for ev in yaml.parse(text, Loader=loader):
            if isinstance(ev, yaml.AliasEvent):
                if ev.anchor not in sizes:
                    raise ConfigError(f"{name}: alias *{ev.anchor} refers to a node that contains it (a recursive "
                                      "alias); recompose it with `python pipelines/compose.py`")
                n, d = sizes[ev.anchor]
            elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append([1, 0, ev.anchor])
                if len(stack) - 1 > MAX_DEPTH:
                    raise ConfigError(f"{name} nests more than {MAX_DEPTH} levels; recompose it with "
                                      "`python pipelines/compose.py`")
                continue
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                n, d, anchor = stack.pop()
                d += 1
                if anchor is not None:
                    sizes[anchor] = (n, d)
            elif isinstance(ev, yaml.ScalarEvent):
                n, d = 1, 0
                if ev.anchor is not None:
                    sizes[ev.anchor] = (1, 0)
            else:
                continue
            top = stack[-1]
            top[0] += n
            top[1] = max(top[1], d)
            total = sum(s[0] for s in stack)
            if total > MAX_NODES or len(stack) - 1 + d > MAX_DEPTH:
                raise ConfigError(f"{name} expands to more than {MAX_NODES} values or {MAX_DEPTH} levels (YAML "
                                  "aliases, a 'billion laughs'?); recompose it with `python pipelines/compose.py`")
    except yaml.YAMLError:
        return  # not valid YAML: OmegaConf.load names the line and column


def read_params(path: str | Path) -> Any:
    """``OmegaConf.load(path)`` after checking the file's size, nesting and alias expansion."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise ConfigError(f"{path} is {size} bytes, over the {MAX_PARAMS_BYTES}-byte limit for a config file; "
                          "recompose it with `python pipelines/compose.py`")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); recompose it with "
                          "`python pipelines/compose.py`") from None
    check_yaml_limits(text, str(path))
    return OmegaConf.load(io.StringIO(text))


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def resolver_names(value: str) -> list[str]:
    """Names of the resolvers a string calls (nested and quoted ones too); [] for plain text or ``${key}``."""
    from omegaconf import grammar_parser
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    if "${" not in value:
        return []
    try:
        tree = grammar_parser.parse(value, parser_rule="text")
    except GrammarParseError:
        return []  # not an interpolation OmegaConf can resolve: validation names it
    names, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(node.resolverName().getText())
        todo += [node.getChild(i) for i in range(node.getChildCount() or 0)
                 if hasattr(node.getChild(i), "getChildCount")]
    return names


def forbid_resolvers(cfg: DictConfig | Mapping, source: str = "the config") -> None:
    """Raise ConfigError naming the first key whose (unresolved) value calls a resolver."""
    data = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    for key, value in _leaves(data):
        if isinstance(value, str):
            names = resolver_names(value)
            if names:
                raise ConfigError(
                    f"config value {key} in {source} calls the resolver ${{{names[0]}:...}}: resolvers are not "
                    "allowed (every value reaches the W&B run and the dashboard); give the value itself, e.g. "
                    f"{key}=\"$VAR\" expanded by the shell")


def forbid_env_secrets(cfg: DictConfig | Mapping, environ: Mapping[str, str] | None = None,
                       source: str = "the config") -> None:
    """Raise ConfigError when a string value holds the value of a secret-looking environment variable."""
    environ = os.environ if environ is None else environ
    secrets = {k: v for k, v in environ.items() if SECRET_NAME.search(k) and len(v.strip()) >= MIN_SECRET_LEN}
    if not secrets:
        return
    data = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    for key, value in _leaves(data):
        if not isinstance(value, str):
            continue
        for var, secret in secrets.items():
            if secret.strip() in value:
                raise ConfigError(
                    f"config value {key} in {source} holds the value of the environment variable {var} (a secret?): "
                    "it would be shown on the dashboard and sent to the W&B run; remove it (e.g. a "
                    "${oc.env:...} resolved by `dvc exp run -S`)")
