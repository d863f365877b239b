"""Checksums of every intermediate artifact, written with it and verified when a later stage reads it.

Every folder a stage writes through :func:`repshare.utils.io.atomic_dir` gets a ``checksums.json``
(relative path -> sha256 of each file, and the stage that wrote it) before it is swapped into place,
so the checksums are part of the same atomic output and hold no timestamp (same data, same DVC hash).
A stage that reads an artifact calls :func:`verify_file` (or :func:`read_json_verified`) first: a file
that was truncated, flipped or replaced since it was written stops the stage with one line naming the
file and the stage to rerun, instead of becoming a wrong result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CHECKSUMS = "checksums.json"
FORMAT = 1


class ArtifactError(ValueError):
    """An intermediate artifact is missing from its checksum list, corrupt, or unreadable."""


def record_checksums(folder: str | os.PathLike, stage: str) -> Path:
    """Write ``folder/checksums.json`` for every file below ``folder`` (sorted, no timestamps)."""
    from repshare.utils.io import sha256_file

    folder = Path(folder)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != CHECKSUMS and not p.name.startswith("."):
            files[p.relative_to(folder).as_posix()] = sha256_file(p)
    out = folder / CHECKSUMS
    out.write_text(json.dumps({"format": FORMAT, "stage": stage, "files": files}, indent=1) + "\n", encoding="utf-8")
    return out


def find_checksums(path: Path, max_up: int = 4) -> Path | None:
    """The nearest ``checksums.json`` in ``path``'s folder or up to ``max_up`` folders above it."""
    folder = path.parent
    for _ in range(max_up + 1):
        cand = folder / CHECKSUMS
        if cand.is_file():
            return cand
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def verify_file(path: str | os.PathLike, stage_hint: str = "") -> Path:
    """Check ``path`` against the checksum recorded when it was written; ArtifactError names file and stage."""
    from repshare.utils.io import sha256_file

    path = Path(path)
    rerun = f"rerun the {stage_hint} stage" if stage_hint else "rerun the stage that writes it"
    if not path.is_file():
        raise ArtifactError(f"missing file {path}: {rerun}")
    manifest = find_checksums(path)
    if manifest is None:
        raise ArtifactError(f"{path} has no {CHECKSUMS} beside it (written by an older version?): {rerun}")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        files, stage = doc["files"], str(doc.get("stage") or stage_hint or "its")
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{manifest} is corrupt: {rerun}") from None
    rel = path.resolve().relative_to(manifest.parent.resolve()).as_posix()
    want = files.get(rel)
    if want is None:
        raise ArtifactError(f"{path} is not listed in {manifest} (a stray file?): rerun the {stage} stage")
    if sha256_file(path) != want:
        raise ArtifactError(f"{path} is corrupt (its checksum differs from when the {stage} stage wrote it): "
                            f"rerun the {stage} stage")
    return path


def read_json_verified(path: str | os.PathLike, stage_hint: str = "") -> Any:
    from repshare.utils.io import read_json

    return read_json(verify_file(path, stage_hint))
