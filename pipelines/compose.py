"""Compose conf/ into params.yaml, exactly as DVC's Hydra integration does on `dvc exp run`.

    python pipelines/compose.py                     # the embedded default
    python pipelines/compose.py experiment=smoke    # any Hydra overrides
    python pipelines/compose.py --check             # exit 1 if params.yaml is stale vs conf/
    python pipelines/compose.py --validate [FILE]   # exit 2 naming the key if FILE (params.yaml) is invalid

Errors (a misspelt key, an unknown option such as data=foo, a bad value) print one line, exit status 2.
"""

from __future__ import annotations

import sys

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repshare.config import ConfigError, compose_raw, validate_config
from repshare.config_guard import forbid_env_secrets, forbid_resolvers, read_params
from repshare.stage import check_seed
from repshare.utils.io import write_text

HEADER = "# Composed from conf/ by pipelines/compose.py (or `dvc exp run`). Edit conf/, not this file.\n"


def one_line(err: BaseException) -> str:
    """Hydra's messages span lines (options, search path, grammar link); keep what names the problem."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if text.startswith("Could not override") and cause is not None and "not in struct" in str(cause):
        key = text.split("'")[1] if "'" in text else "the key"
        text += f" ({key} is not a config key: misspelt? `+{key}=...` adds a new key)"
    elif text.startswith("Error parsing override") and len(lines) > 1:
        text += f": {lines[1]} (overrides are key=value)"
    elif "Could not find" in text:
        opts = [ln for ln in lines[lines.index(next((x for x in lines if x.startswith("Available options")), lines[0])) + 1:]
                if not ln.startswith(("Config search path", "provider="))]
        opts = [o for o in opts if not o.endswith("_schema")]
        if opts and any(x.startswith("Available options") for x in lines):
            text += f"; choose one of: {', '.join(opts)}"
    return text


def validate_file(path: str) -> int:
    """Validate an existing composed file as every stage will (whole config), before DVC touches any output."""
    from repshare.stage import describe_error, load_params

    try:
        load_params(path)
    except Exception as err:
        line = describe_error(err)
        if line is None:
            raise
        print(f"error [compose]: {line}", file=sys.stderr)
        return 2
    print(f"{path} is valid")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--validate"]:
        return validate_file(argv[1] if len(argv) > 1 else "params.yaml")
    check = "--check" in argv
    overrides = [a for a in argv if a != "--check"]
    try:
        cfg = compose_raw(overrides)
        # Before anything resolves: an ${oc.env:...} would be written into params.yaml as its value.
        forbid_resolvers(cfg, "the composed config")
        forbid_env_secrets(cfg, source="the composed config")
        check_seed(validate_config(cfg).seed)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        # A misspelt key, an unknown group option (data=foo) or a bad value: one line, exit 2.
        print(f"error [compose]: {one_line(err)}", file=sys.stderr)
        return 2
    text = HEADER + OmegaConf.to_yaml(cfg, resolve=True)
    if check:
        try:
            current = read_params("params.yaml")
        except FileNotFoundError:
            print("params.yaml is missing", file=sys.stderr)
            return 1
        except ConfigError as err:
            print(f"error [compose]: {one_line(err)}", file=sys.stderr)
            return 2
        if OmegaConf.to_container(current) != OmegaConf.to_container(cfg, resolve=True):
            print("params.yaml differs from conf/ composed with " + (" ".join(overrides) or "no overrides"), file=sys.stderr)
            return 1
        print("params.yaml is up to date")
        return 0
    write_text("params.yaml", text)
    print(f"wrote params.yaml ({cfg.experiment_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
