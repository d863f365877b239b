"""Read a W&B offline run's transaction log (``run-<id>.wandb``): what ``wandb sync`` would upload.

Since wandb 0.18 the SDK writes this file from its Go core and no longer ships a Python reader, so the
tests read it here: W&B's LevelDB-style log (a 7-byte file header ``:W&B`` + magic 0xBEE1 + version 0,
then 32 KiB blocks of records, each a 7-byte header ``<crc32, length, type>`` and a chunk of a
protobuf ``Record``; type 1 = whole record, 2/3/4 = first/middle/last chunk; a block's tail shorter
than a header is zero padding). Tests only.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """Every ``wandb_internal_pb2.Record`` in the file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path} is not a W&B transaction log (header {data[:HEADER]!r})")
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # padding to the end of the block
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FIRST, MIDDLE):
            buf = chunk if kind == FIRST else buf + chunk
            continue
        rec = pb.Record()
        rec.ParseFromString(chunk if kind == FULL else buf + chunk)
        yield rec


def run_log(run_folder: Path, timeout: float = 20) -> dict[str, Any]:
    """The parts of a finished offline run's log the tests check: config, saved files, history keys, exit
    code. W&B's core process writes the log behind the Python process (``finish()`` returns before the
    exit record is on disk while the process lives on: tests call ``wandb.teardown()`` first), so this
    waits up to ``timeout`` s for it."""
    deadline = time.monotonic() + timeout
    while True:
        out = _read(run_folder)
        if out["exit_code"] is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _read(run_folder: Path) -> dict[str, Any]:
    (log,) = Path(run_folder).glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "files": set(), "history_keys": set(), "exit_code": None, "run": None}
    for rec in records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "files":
            out["files"] |= {f.path for f in rec.files.files}
        elif kind == "history":
            out["history_keys"] |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out
