"""Add to dvc.yaml every src/repshare module a stage imports (directly, inside functions, or through the
claim registry) but does not yet list among its deps, so an edit there reruns the stage.

    python scripts/sync_dvc_deps.py          # add what is missing, in place
    python scripts/sync_dvc_deps.py --check  # exit 1 and name what is missing; change nothing

Only adds: a dep that covers more than needed (a whole package) stays. tests/test_structure.py checks
the same property with its own import walk.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def registry_modules() -> list[str]:
    """Modules the claim registry imports by name (importlib), invisible to an import walk."""
    sys.path.insert(0, str(SRC))
    from repshare.comparison.registry import PAPERS

    return [f"repshare.{m}" for p in PAPERS for m in p.claim_modules]


def imports_of(path: Path, dynamic: list[str]) -> set[Path]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    if path == module_file("repshare.comparison.registry"):
        names += dynamic
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "repshare":
            continue
        for k in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b too
            f = module_file(".".join(parts[:k]))
            if f is not None:
                out.add(f)
    return out


def closure(start: Path, dynamic: list[str]) -> set[Path]:
    seen: set[Path] = set()
    todo = [start]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(imports_of(f, dynamic))
    return seen


def missing_deps(stage: str, deps: list[str], dynamic: list[str]) -> list[str]:
    listed = [ROOT / d for d in deps]
    needed = closure(ROOT / "pipelines" / f"{stage}.py", dynamic)
    missing = {f for f in needed if f.is_relative_to(SRC) and not any(f == d or d in f.parents for d in listed)}
    out = set(missing)
    for folder in {f.parent for f in missing}:  # a whole package needed: list the folder, not its files
        files = set(folder.rglob("*.py"))
        if folder != SRC / "repshare" and files <= needed:
            out = {f for f in out if folder not in f.parents} | {folder}
    return sorted(str(f.relative_to(ROOT)) for f in out)


def insert(text: str, stage: str, extra: list[str]) -> str:
    """Insert ``extra`` after the stage's last ``- src/`` dep line (keeps comments and layout)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.split("#")[0].rstrip() == f"  {stage}:")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  ") and not
                lines[i].startswith("   ") and lines[i].strip()), len(lines))
    src_lines = [i for i in range(start, end) if lines[i].strip().startswith("- src/")]
    at = src_lines[-1] + 1 if src_lines else next(i for i in range(start, end) if "pipelines/" in lines[i]) + 1
    indent = lines[at - 1][: len(lines[at - 1]) - len(lines[at - 1].lstrip())]
    return "".join(lines[:at] + [f"{indent}- {d}\n" for d in extra] + lines[at:])


def main(argv: list[str]) -> int:
    path = ROOT / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    dynamic = registry_modules()
    stages = yaml.safe_load(text)["stages"]
    todo = {s: missing_deps(s, spec.get("deps", []), dynamic) for s, spec in stages.items()}
    todo = {s: m for s, m in todo.items() if m}
    for s, m in todo.items():
        print(f"{s}: {', '.join(m)}")
    if "--check" in argv:
        return 1 if todo else 0
    for s, m in todo.items():
        text = insert(text, s, m)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
