"""The shape of the code, checked on the source (AST), against dvc.yaml as an independent truth:
one ordered stage list, every module a stage imports among its DVC deps, no stage importing a
stage, no private name crossing modules, thin stage modules."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from repshare.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "repshare"
MAX_STAGE_LINES = 160  # "about 150 lines at most" of code (comments and blank lines not counted)


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """repshare.a.b -> src/repshare/a/b.py or src/repshare/a/b/__init__.py (None if neither)."""
    base = SRC.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[Path]:
    """Files of the repshare modules ``path`` imports anywhere (top level or inside functions)."""
    out: set[Path] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "repshare":
                continue
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # every package on the way is imported too
                f = module_file(".".join(parts[:k]))
                if f is not None:
                    out.add(f)
    return frozenset(out)


def closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(direct_imports(f))
    return seen


def test_stage_list_equals_dvc_yaml_in_order():
    assert tuple(dvc_stages()) == STAGES


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_has_its_entry_point_and_module(name):
    entry = ROOT / "pipelines" / f"{name}.py"
    assert entry.is_file(), f"pipelines/{name}.py is missing"
    assert f"repshare.stages.{name} import run" in entry.read_text(), f"pipelines/{name}.py must run repshare.stages.{name}"
    assert module_file(f"repshare.stages.{name}") is not None
    assert dvc_stages()[name]["cmd"] == f"python pipelines/{name}.py"


@pytest.mark.parametrize("name", STAGES)
def test_every_module_a_stage_imports_is_a_dvc_dep(name):
    deps = [ROOT / d for d in dvc_stages()[name].get("deps", [])]

    def covered(f: Path) -> bool:
        return any(f == d or d in f.parents for d in deps)

    needed = closure(PKG / "stages" / f"{name}.py") | closure(ROOT / "pipelines" / f"{name}.py") - {
        ROOT / "pipelines" / f"{name}.py"}
    missing = sorted(str(f.relative_to(ROOT)) for f in needed if f.is_relative_to(SRC) and not covered(f))
    assert not missing, f"stage {name}: imported but not in dvc.yaml deps: {missing}"


@pytest.mark.parametrize("name", STAGES)
def test_no_stage_imports_another_stage(name):
    path = PKG / "stages" / f"{name}.py"
    others = {f for f in direct_imports(path) if f.parent == PKG / "stages" and f.name != "__init__.py"}
    assert not others, f"stages/{name}.py imports {sorted(p.name for p in others)}"


@pytest.mark.parametrize("name", STAGES)
def test_stage_modules_are_thin(name):
    lines = (PKG / "stages" / f"{name}.py").read_text(encoding="utf-8").splitlines()
    code = [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    assert len(code) <= MAX_STAGE_LINES, f"stages/{name}.py has {len(code)} code lines"


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("repshare"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}")
                    if node.module.split(".")[-1].startswith("_") and not node.module.endswith("__"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports private module {node.module}")
    assert not bad, bad


def test_no_import_cycles_between_science_and_stages():
    """Science modules never import the wiring (stages/) back: the old shims did."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if path.parent == PKG / "stages" or path.name in ("sweep.py",):
            continue
        stage_files = {f for f in direct_imports(path) if f.parent == PKG / "stages" and f.name != "__init__.py"}
        if stage_files:
            bad.append(f"{module_name(path)} imports {sorted(module_name(f) for f in stage_files)}")
    assert not bad, bad


def test_the_import_scanner_sees_lazy_and_package_imports(tmp_path):
    """The checks above rest on direct_imports: check it on a known file of this tree."""
    got = {module_name(f) for f in direct_imports(PKG / "stages" / "train_detector.py")}
    assert {"repshare", "repshare.training"} <= got
    got_fit = {module_name(f) for f in direct_imports(PKG / "training" / "fit.py")}
    assert "repshare.training.resume" in got_fit and "repshare.models.checkpoint" in got_fit


def module_level_imports(path: Path) -> set[Path]:
    """Files of the repshare modules ``path`` imports at module level (what runs when it is imported)."""
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {f for n in names if n.split(".")[0] == "repshare" and (f := module_file(n)) and f != path}
    return out


def test_no_import_circles():
    graph = {f: module_level_imports(f) for f in PKG.rglob("*.py")}
    state: dict[Path, int] = {}
    circles = []

    def visit(f: Path, path: list[Path]) -> None:
        state[f] = 1
        for g in graph.get(f, ()):
            if state.get(g) == 1:
                circles.append(" -> ".join(str(p.relative_to(SRC)) for p in path[path.index(g):] + [g]))
            elif g not in state:
                visit(g, path + [g])
        state[f] = 2

    for f in sorted(graph):
        if f not in state:
            visit(f, [f])
    assert not circles, circles
