"""What a method's stage hands to the reviewer dashboard: ``results/<method>/section.json``.

The dashboard renders any section the same way (title, summary, tables, captioned figures), so a
method never writes HTML itself. Figure paths are relative to the section file's folder; tables
hold plain values with readable column names.

A section does not judge the paper. It carries ``measurements`` (quantity key -> Estimate, the
numbers the paper's claims are judged on, each with its interval) and ``sanity`` checks (things that
hold by construction, shown apart); the compare stage applies the claim registry and the one
verdict rule (:mod:`repshare.claims`) to the measurements.

The file is strict JSON with a ``schema_version``; :func:`read_section` refuses another version, an
unknown field, a NaN/Infinity token, a figure path leaving the folder and a mistyped value, naming
the file and the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from repshare.claims import SanityCheck
from repshare.comparison.jsonfile import read_strict_json
from repshare.stats import Estimate
from repshare.utils.io import write_json

SCHEMA_VERSION = 2  # 2: measurements + sanity replace the per-section claim verdicts
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")  # method keys become page names: never a path


@dataclass
class Table:
    title: str
    columns: list[str]  # readable names, in display order
    rows: list[dict[str, Any]]  # keys = columns
    caption: str = ""


@dataclass
class Figure:
    path: str  # relative to the section.json folder (PNG; a PDF twin may sit beside it)
    caption: str  # what to look at


@dataclass
class ReportSection:
    method: str  # key, e.g. "gemel"; the dashboard page is <method>.html
    title: str
    summary: str  # a short paragraph: what ran, on what, the headline
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # choices the paper leaves open, caveats
    measurements: dict[str, Estimate] = field(default_factory=dict)  # quantity key -> estimate with interval
    sanity: list[SanityCheck] = field(default_factory=list)  # by-construction checks: shown apart, never claims


class SectionError(ValueError):
    """A section.json is missing or malformed; the message names the file and the field."""


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def section_doc(section: ReportSection) -> dict[str, Any]:
    """The plain JSON document of a section (non-finite table cells become null: strict JSON)."""
    doc = {"schema_version": SCHEMA_VERSION, **asdict(section)}
    doc["tables"] = [{**asdict(t), "rows": [{k: _finite_or_none(v) for k, v in r.items()} for r in t.rows]}
                     for t in section.tables]
    doc["measurements"] = {k: e.to_dict() for k, e in section.measurements.items()}
    doc["sanity"] = [c.to_dict() for c in section.sanity]
    return doc


def write_section(path: str | Path, section: ReportSection) -> Path:
    """Check ``section`` as :func:`read_section` will, then write it (strict JSON)."""
    doc = section_doc(section)
    parse_section(json.loads(json.dumps(doc)), Path(path))  # the same checks as on reading
    return write_json(path, doc)


def _need(ok: bool, path: Path, name: str, got: Any, want: str) -> None:
    if not ok:
        raise SectionError(f"{path}: field {name!r} must be {want}, got {got!r}"[:400])


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _fields(doc: Any, cls: type, path: Path, where: str, optional: tuple[str, ...] = ()) -> None:
    _need(isinstance(doc, dict), path, where or "(document)", type(doc).__name__, "an object")
    names = [f.name for f in fields(cls)]  # declaration order: the first missing field named is always the same
    unknown = sorted(set(doc) - set(names) - ({"schema_version"} if cls is ReportSection else set()))
    if unknown:
        raise SectionError(f"{path}: unknown field {(where + '.' if where else '') + unknown[0]!r} "
                           "(written by another version? rerun the method's stage)")
    missing = [n for n in names if n not in doc and n not in optional]
    if missing:
        raise SectionError(f"{path}: malformed report section: missing field {(where + '.' if where else '') + missing[0]!r}")


def parse_section(doc: Any, path: Path) -> ReportSection:
    """A section from its parsed JSON, every field checked; SectionError names the file and the field."""
    _fields(doc, ReportSection, path, "", optional=("tables", "figures", "notes", "measurements", "sanity"))
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SectionError(f"{path}: field 'schema_version' is {version!r}, expected {SCHEMA_VERSION} "
                           "(written by another version: rerun the method's stage)")
    method = doc["method"]
    _need(_text(method) and bool(IDENTIFIER.match(method)), path, "method", method,
          "an identifier (letters, digits, _ and -)")
    for name in ("title", "summary"):
        _need(_text(doc[name]), path, name, doc[name], "text")
    tables = []
    for k, t in enumerate(doc.get("tables", [])):
        _fields(t, Table, path, f"tables[{k}]", optional=("caption",))
        _need(isinstance(t["columns"], list) and all(_text(c) for c in t["columns"]), path,
              f"tables[{k}].columns", t["columns"], "a list of column names")
        _need(_text(t["title"]) and _text(t.get("caption", "")), path, f"tables[{k}].title", t["title"], "text")
        _need(isinstance(t["rows"], list), path, f"tables[{k}].rows", t["rows"], "a list of rows")
        for j, row in enumerate(t["rows"]):
            _need(isinstance(row, dict), path, f"tables[{k}].rows[{j}]", row, "an object")
            extra = [c for c in row if c not in t["columns"]]
            _need(not extra, path, f"tables[{k}].rows[{j}].{extra[0] if extra else ''}", "", "one of the table's columns")
            for c, v in row.items():
                _need(v is None or isinstance(v, (str, int, float, bool)) or (
                    isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v)), path,
                    f"tables[{k}].rows[{j}].{c}", v, "a plain value")
        tables.append(Table(t["title"], list(t["columns"]), [dict(r) for r in t["rows"]], t.get("caption", "")))
    figures = []
    for k, f in enumerate(doc.get("figures", [])):
        _fields(f, Figure, path, f"figures[{k}]")
        p = f["path"]
        _need(_text(p) and p != "", path, f"figures[{k}].path", p, "a relative file path")
        _need(not Path(p).is_absolute() and ".." not in Path(p).parts and ":" not in p and "\\" not in p, path,
              f"figures[{k}].path", p, "a path inside the section's folder")
        _need(_text(f["caption"]), path, f"figures[{k}].caption", f["caption"], "text")
        figures.append(Figure(p, f["caption"]))
    notes = doc.get("notes", [])
    _need(isinstance(notes, list) and all(_text(n) for n in notes), path, "notes", notes, "a list of text")
    meas_doc = doc.get("measurements", {})
    _need(isinstance(meas_doc, dict), path, "measurements", meas_doc, "an object (quantity -> estimate)")
    measurements = {}
    for key, est in meas_doc.items():
        _need(isinstance(est, dict), path, f"measurements.{key}", est, "an estimate object")
        try:
            measurements[key] = Estimate.from_dict(est)
        except (ValueError, TypeError) as err:
            raise SectionError(f"{path}: field 'measurements.{key}': {err}") from None
        e = measurements[key]
        _need(not e.has_interval or e.lo <= e.hi, path, f"measurements.{key}", [e.lo, e.hi], "an interval with lo <= hi")
    sanity_doc = doc.get("sanity", [])
    _need(isinstance(sanity_doc, list), path, "sanity", sanity_doc, "a list of checks")
    sanity = []
    for k, c in enumerate(sanity_doc):
        _need(isinstance(c, dict) and isinstance(c.get("passed"), bool), path, f"sanity[{k}].passed",
              c.get("passed") if isinstance(c, dict) else c, "true or false")
        try:
            sanity.append(SanityCheck.from_dict(c))
        except ValueError as err:
            raise SectionError(f"{path}: field 'sanity[{k}]': {err}") from None
    return ReportSection(method, doc["title"], doc["summary"], tables, figures, list(notes), measurements, sanity)


def read_section(path: str | Path, stage_hint: str = "") -> ReportSection:
    """Read ``path`` after verifying it against its folder's checksums.json (when ``stage_hint`` is
    given: the stage to rerun); SectionError (a ValueError) names the file and the field."""
    path = Path(path)
    if stage_hint:
        from repshare.utils.artifacts import verify_file

        verify_file(path, stage_hint)
    return parse_section(read_strict_json(path, SectionError), path)
