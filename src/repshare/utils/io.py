"""Crash-safe file output: every result is written to a temporary name and renamed into place,
so an interrupted stage never leaves a half-written file where a later stage would read it."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _owner_tag() -> str:
    # Host and pid in every temporary name: a later run can tell a dead writer's leftovers from a live one.
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _is_stale(tmp: Path, max_age_s: float) -> bool:
    """Whether a temporary sibling was left by a writer that is gone (killed, crashed, out of disk)."""
    parts = tmp.name.split(".")  # "", name..., "<host>-<pid>", "<random>", "tmp"
    owner = parts[-3] if len(parts) >= 5 else ""
    host, _, pid = owner.rpartition("-")
    if host and pid.isdigit():
        if host != socket.gethostname().replace(".", "_"):
            return False  # another machine's writer (shared disk): cannot tell, leave it
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False  # its writer is still running
    # Old-style name without an owner: stale once old enough that no live writer can still own it.
    try:
        return time.time() - tmp.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


def clean_stale_temps(path: str | os.PathLike, max_age_s: float = 6 * 3600) -> list[Path]:
    """Delete the temporaries (``.<name>.<host>-<pid>.*.tmp``, ``.<name>.old``) a killed writer of ``path`` left.

    Called whenever ``path`` is written again, so a kill -9 during a stage leaves no litter past its next run.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if _is_stale(tmp, max_age_s):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            removed.append(tmp)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and path.exists():  # the swap finished; only the old copy's deletion was cut short
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    elif old.is_dir():  # killed between the two renames of atomic_dir: put the previous result back
        os.replace(old, path)
        log.warning("restored %s from %s left by an interrupted run", path, old.name)
    if removed:
        log.warning("removed %d stale temporary file(s) of %s left by an interrupted run: %s", len(removed), path,
                    ", ".join(p.name for p in removed))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be shared
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def csv_text(rows: list[dict], lineterminator: str = "\n") -> str:
    """CSV of ``rows`` (columns: every key in first-seen order; ``empty`` when there are no rows)."""
    import csv
    import io

    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["empty"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator=lineterminator)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict], lineterminator: str = "\n") -> Path:
    """The project's one CSV writer (atomic; columns in first-seen order)."""
    return write_text(path, csv_text(rows, lineterminator))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed json in {path}: {err}") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, stage: str | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in whole when the block succeeds.

    The previous directory (if any) stays untouched until the new one is complete. With ``stage``,
    the folder gets a ``checksums.json`` of its files (:mod:`repshare.utils.artifacts`) before the
    swap, so a later stage can verify what it reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if stage is not None:
            from repshare.utils.artifacts import record_checksums

            record_checksums(tmp, stage)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
