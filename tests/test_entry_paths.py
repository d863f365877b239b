"""Every path into the stages checks the whole config before DVC can delete an output (issue 27):
params.yaml read with limits, no resolvers or environment secrets, the `validate` stage first in dvc.yaml,
and DVC itself (`dvc repro`, `dvc exp run -S`) on the smoke preset with stand-in stages."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from repshare.config import ConfigError
from repshare.config_guard import (MAX_DEPTH, check_yaml_limits, forbid_env_secrets, forbid_resolvers,
                                   read_params, resolver_names)
from repshare.stage import load_params
from repshare.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MARKER = "results/validated.txt"


def billion_laughs(levels: int = 9) -> str:
    """9 strings, then ``levels - 1`` lists of 9 aliases of the previous one: 9**levels strings once expanded."""
    text = "lol0: &a0 [" + ", ".join(["lol"] * 9) + "]\n"
    for i in range(1, levels):
        text += f"lol{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error [")]


# ----------------------------------------------------------------------------- params.yaml limits
def test_small_aliases_pass_with_their_values(tmp_path):
    # 3 levels = 9**3 = 729 strings: within the limit, and OmegaConf sees the expanded lists.
    p = tmp_path / "p.yaml"
    p.write_text(billion_laughs(3))
    cfg = read_params(p)
    assert len(cfg.lol2) == 9 and len(cfg.lol2[0]) == 9 and cfg.lol2[8][8][8] == "lol"


@pytest.mark.parametrize("text, match", [
    (billion_laughs(9), "expands to more than"),       # 387 million strings
    (billion_laughs(6), "expands to more than"),       # 531,441 > MAX_NODES
    ("a: &x [1, *x]\n", "recursive alias"),
    ("a: " + "[" * 200_000 + "]" * 200_000 + "\n", "nests more than"),
    ("a:\n" + "".join(" " * (2 * k) + f"k{k}:\n" for k in range(1, MAX_DEPTH + 3)) + "  " * (MAX_DEPTH + 3) + "v: 1\n",
     "nests more than"),
])
def test_params_over_the_limits_is_one_quick_error(tmp_path, text, match):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        check_yaml_limits(text, "params.yaml")
    assert time.perf_counter() - t0 < 5  # unbounded, the 9-level bomb and the deep nesting take hours


def test_oversized_params_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("x: " + "a" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="over the .*-byte limit"):
        load_params(p)


def test_compose_validate_and_a_stage_on_a_bomb(tmp_path):
    """The two entry points that read params.yaml: one line, exit 2, within seconds (before: hung)."""
    good = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(good + billion_laughs(9))
    for cmd in ([PY, str(REPO / "pipelines" / "compose.py"), "--validate", "params.yaml"],
                [PY, str(REPO / "pipelines" / "validate.py")]):
        proc = run(cmd, tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stderr[-1500:]
        assert len(error_lines(proc.stderr)) == 1 and "expands to more than" in proc.stderr
        assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- resolvers and secrets
def test_resolver_names_by_hand():
    assert resolver_names("plain") == [] and resolver_names("${data.num_classes}") == []
    assert resolver_names("x ${oc.env:HOME} y") == ["oc.env"]
    assert sorted(resolver_names("${oc.select:a,${oc.env:B}}")) == ["oc.env", "oc.select"]
    assert sorted(resolver_names("${oc.decode:'${oc.env:B}'}")) == ["oc.decode", "oc.env"]  # inside quotes
    assert resolver_names("${ now : %Y }") == ["now"]
    assert resolver_names(r"\${oc.env:B}") == []  # escaped: a literal string, never resolved


def test_resolver_in_params_file_is_refused_before_it_resolves(tmp_path, monkeypatch):
    from repshare.config import compose

    monkeypatch.setenv("MY_SECRET_TOKEN", "s3cret-value-123")
    cfg = compose(["experiment=smoke"])  # not the committed params.yaml: it may lag behind conf/
    cfg.report.title = "${oc.env:MY_SECRET_TOKEN}"
    p = tmp_path / "params.yaml"
    p.write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match=r"report.title .*resolver \$\{oc.env:") as err:
        load_params(p)
    assert "s3cret" not in str(err.value)
    cfg.report.title = "run ${seed}"  # a plain interpolation stays allowed
    p.write_text(OmegaConf.to_yaml(cfg))
    assert load_params(p).report.title == f"run {cfg.seed}"


def test_secret_value_in_params_is_refused_naming_key_and_variable():
    cfg = {"report": {"title": "t"}, "compare": {"methods": ["a", "prefix-hunter2hunter2"]}}
    with pytest.raises(ConfigError, match=r"compare.methods\[1\] .*environment variable GITHUB_TOKEN") as err:
        forbid_env_secrets(cfg, {"GITHUB_TOKEN": "hunter2hunter2", "HOME": "/home/x"})
    assert "hunter2" not in str(err.value)
    # Not secret-looking names, and short values, are not matched (a flag such as "1" is everywhere).
    forbid_env_secrets(cfg, {"HOME": "hunter2hunter2", "API_KEY": "a"})


def test_compose_refuses_env_resolver_and_writes_nothing(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    env = {**os.environ, "MY_SECRET_TOKEN": "s3cret-value-123"}
    proc = run([PY, str(REPO / "pipelines" / "compose.py"), "experiment=smoke",
                "report.title='${oc.env:MY_SECRET_TOKEN}'"], tmp_path, env)
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1, proc.stderr[-1500:]
    assert "report.title" in proc.stderr and "s3cret" not in proc.stderr + proc.stdout
    assert (tmp_path / "params.yaml").read_bytes() == before


def test_forbid_resolvers_on_hydra_composed_config():
    from repshare.config import compose_raw

    cfg = compose_raw(["experiment=smoke", "report.title='${oc.env:HOME}'"])
    with pytest.raises(ConfigError, match="report.title"):
        forbid_resolvers(cfg)
    forbid_resolvers(compose_raw(["experiment=smoke"]))  # conf/ itself uses plain interpolations only


# ----------------------------------------------------------------------------- the validate stage
def test_validate_marker_is_the_same_for_any_valid_config(smoke_cfg):
    """Its output must not change with the config: downstream stages rerun only for their own params."""
    from omegaconf import open_dict

    from repshare.stages.validate import run as validate

    path = validate(smoke_cfg)
    first = path.read_bytes()
    with open_dict(smoke_cfg):
        smoke_cfg.seed, smoke_cfg.logger.project = 7, "other"
    assert validate(smoke_cfg).read_bytes() == first and first


def test_dvc_yaml_validate_stage_comes_first_for_every_stage():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(doc)[0] == "validate" == STAGES[0]
    v = doc["validate"]
    assert v["cmd"] == "python pipelines/validate.py"
    assert v["params"] == [{"params.yaml": None}]  # every parameter
    (out,) = v["outs"]
    assert list(out) == [MARKER] and out[MARKER]["persist"] is True
    for name, st in doc.items():
        if name != "validate":
            assert st["deps"][0] == MARKER, name


# ----------------------------------------------------------------------------- DVC itself
STANDIN_STAGES = ("prepare", "gemel", "report")  # the first stage, the example, the last


def _dvc_repo(root: Path) -> tuple[dict, list[Path]]:
    """A git+DVC repo with the real conf/, src/ and validate stage and stand-in stages that fail if run
    (as a stage refusing the value would, after DVC deleted its outputs); their outputs made by hand."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*.tmp")
    for d in ("src", "conf", "pipelines"):
        shutil.copytree(REPO / d, root / d, ignore=ignore)
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    for f in (".dvcignore", ".gitignore"):
        shutil.copy(REPO / f, root / f)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    keep = {"validate": stages["validate"]}
    files = []
    for name in STANDIN_STAGES:
        st = dict(stages[name])
        st["cmd"] = f"python -c \"raise SystemExit('stand-in {name} ran: it would have lost its outputs')\""
        keep[name] = st
        for kind in ("outs", "metrics", "plots", "deps"):
            for o in st.get(kind, []):
                rel = next(iter(o)) if isinstance(o, dict) else o
                p = root / rel
                if rel == MARKER or p.exists():
                    continue
                target = p / "standin.txt" if not p.suffix else p
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f"stand-in {rel}\n")
                files.append(target)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": keep}, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "disabled",
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for cmd in ([PY, "pipelines/compose.py", "experiment=smoke"], [PY, "pipelines/validate.py"],
                ["git", "init", "-q"], ["git", "add", "src", "conf", "pipelines", ".dvc", "dvc.yaml", "params.yaml",
                                        ".gitignore", ".dvcignore"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"],
                ["dvc", "commit", "-f", "-q"]):
        proc = run(cmd, root, env)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    return env, files + [root / MARKER]


def _digest(files: list[Path]) -> dict[Path, str]:
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.mark.slow
def test_dvc_repro_and_exp_run_stop_at_validate_and_lose_nothing(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    env, files = _dvc_repo(root)
    before = _digest(files)
    assert len(before) == len(files)
    good = (root / "params.yaml").read_text()

    def edited(key: str, value) -> str:
        cfg = OmegaConf.create(good)
        OmegaConf.update(cfg, key, value)
        return OmegaConf.to_yaml(cfg)

    # 1. plain `dvc repro` with a bad value edited into params.yaml
    (root / "params.yaml").write_text(edited("gemel.target", 1.5))
    proc = run(["dvc", "repro"], root, env)
    assert proc.returncode != 0
    errs = error_lines(proc.stderr)
    assert len(errs) == 1 and "gemel.target=1.5" in errs[0], proc.stderr[-2000:]
    assert "stand-in" not in proc.stderr + proc.stdout and _digest(files) == before

    # 2. a valid change no stand-in stage tracks: validate reruns, its output is unchanged, nothing else runs
    (root / "params.yaml").write_text(edited("logger.project", "another"))
    proc = run(["dvc", "repro"], root, env)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert "Running stage 'validate'" in proc.stdout and "stand-in" not in proc.stderr
    assert _digest(files) == before
    (root / "params.yaml").write_text(good)

    # 3. `dvc exp run -S` composes through DVC's Hydra integration, which never ran compose.py
    proc = run(["dvc", "exp", "run", "-S", "experiment=smoke", "-S", "gemel.target=1.5"], root, env, timeout=240)
    assert proc.returncode != 0
    errs = error_lines(proc.stderr)
    assert len(errs) == 1 and "gemel.target=1.5" in errs[0], proc.stderr[-2000:]
    assert "stand-in" not in proc.stderr + proc.stdout and _digest(files) == before
