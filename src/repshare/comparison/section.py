"""What a method's stage hands to the reviewer dashboard: ``results/<method>/section.json``.

The dashboard renders any section the same way (title, summary, the paper's claims beside ours,
tables, captioned figures), so a method never writes HTML itself. Figure paths are relative to
the section file's folder; tables hold plain values with readable column names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repshare.utils.io import read_json, write_json

VERDICTS = ("holds", "partly", "does not", "not tested")


@dataclass
class PaperClaim:
    claim: str  # what the paper says, in words
    paper: str  # the paper's number(s), as text
    ours: str  # what we measured on this workload, with CI where there is one
    verdict: str  # one of VERDICTS
    note: str = ""


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
    claims: list[PaperClaim] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # choices the paper leaves open, caveats


def write_section(path: str | Path, section: ReportSection) -> Path:
    for c in section.claims:
        if c.verdict not in VERDICTS:
            raise ValueError(f"claim {c.claim!r}: verdict {c.verdict!r} is not one of {', '.join(VERDICTS)}")
    for t in section.tables:
        for k, row in enumerate(t.rows):
            extra = [key for key in row if key not in t.columns]
            if extra:
                raise ValueError(f"table {t.title!r} row {k}: column {extra[0]!r} is not in its columns")
    return write_json(path, asdict(section))


def read_section(path: str | Path) -> ReportSection:
    doc = read_json(path)
    try:
        return ReportSection(
            method=doc["method"], title=doc["title"], summary=doc["summary"],
            claims=[PaperClaim(**c) for c in doc.get("claims", [])],
            tables=[Table(**t) for t in doc.get("tables", [])],
            figures=[Figure(**f) for f in doc.get("figures", [])],
            notes=list(doc.get("notes", [])),
        )
    except KeyError as err:
        raise ValueError(f"{path}: malformed report section: missing field {err.args[0]!r}") from None
    except (TypeError, AttributeError) as err:
        raise ValueError(f"{path}: malformed report section ({err})") from None
