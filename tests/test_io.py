"""Crash-safe writes: a failure part-way leaves the previous result untouched and no temp litter."""

from __future__ import annotations

import json

import pytest

from repshare.utils.io import atomic_dir, atomic_path, read_json, sha256_file, write_json


def test_atomic_dir_keeps_old_result_on_failure(tmp_path):
    out = tmp_path / "prepared"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("v2-partial")
            raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    out = tmp_path / "res"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("x")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("y")
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_atomic_path_and_json_roundtrip(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"a": 1})
    with pytest.raises(ValueError):
        with atomic_path(p) as tmp:
            tmp.write_text("{broken")
            raise ValueError("stop")
    assert read_json(p) == {"a": 1}
    assert list(tmp_path.iterdir()) == [p]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(bad)


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    p = tmp_path / "b.bin"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    json.dumps(sha256_file(p))
