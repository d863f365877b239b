"""Two runs side by side: every paper verdict, claim and headline number that changed, and why they might.

    python -m repshare.report.diff A B [--out diff.html]

A and B are each a results folder (``results/``, a sweep job's ``multirun/.../0/results``, a copy
from another machine) or a git revision (``HEAD~1``, a tag, a commit) whose ``results/`` DVC can read
(``dvc.api.read``: from the cache or the remote). Reads ``compare/claims.json`` and
``verdicts.json`` (verified against the compare stage's checksums in a folder),
``metrics/compare.json`` and ``metrics/compare_run.json`` (provenance: commit, config, versions,
machine; optional). Writes one static page (no script, no network) in the dashboard's style. Bad
input: one line naming the file, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repshare.report.provenance import flat
from repshare.utils.io import write_text

FILES = {"claims": "compare/claims.json", "verdicts": "compare/verdicts.json",
         "metrics": "metrics/compare.json", "run": "metrics/compare_run.json"}
VERIFIED = ("claims", "verdicts")
OPTIONAL = ("metrics", "run")


@dataclass
class Run:
    label: str
    claims: list[dict[str, Any]]
    papers: list[dict[str, Any]]
    metrics: dict[str, Any]
    record: dict[str, Any]


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise ValueError(f"malformed json in {where}: {err}") from None


def read_run(source: str, results_in_repo: str = "results") -> Run:
    """A results folder, or a git revision read through DVC; ValueError names the missing file."""
    docs: dict[str, Any] = {}
    folder = Path(source)
    for key, rel in FILES.items():
        if folder.is_dir():
            path = folder / rel
            if key in OPTIONAL and not path.is_file():
                docs[key] = {}
                continue
            if key in VERIFIED:
                from repshare.utils.artifacts import verify_file

                verify_file(path, "compare")
            if not path.is_file():
                raise ValueError(f"missing file {path}: is {source} a results folder? (run the compare stage)")
            docs[key] = _parse(path.read_text(encoding="utf-8"), str(path))
        else:
            import dvc.api

            where = f"{results_in_repo}/{rel} at revision {source!r}"
            try:
                docs[key] = _parse(dvc.api.read(f"{results_in_repo}/{rel}", repo=".", rev=source), where)
            except ValueError:
                raise
            except Exception as err:  # not a folder, and DVC/git cannot find it at that revision
                if key in OPTIONAL:
                    docs[key] = {}
                    continue
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(f"{source!r} is neither a results folder nor a revision with {where}: {first}") from None
    claims, verdicts = docs["claims"], docs["verdicts"]
    if not isinstance(claims, dict) or not isinstance(claims.get("claims"), list):
        raise ValueError(f"{source}: {FILES['claims']} has no 'claims' list (written by an older version?)")
    if not isinstance(verdicts, dict) or not isinstance(verdicts.get("papers"), list):
        raise ValueError(f"{source}: {FILES['verdicts']} has no 'papers' list (written by an older version?)")
    return Run(source, claims["claims"], verdicts["papers"], docs["metrics"] if isinstance(docs["metrics"], dict) else {},
               docs["run"] if isinstance(docs["run"], dict) else {})


def _changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    fa, fb = flat(a), flat(b)
    return [{"Key": k, "A": fa.get(k, "(absent)"), "B": fb.get(k, "(absent)")}
            for k in sorted(set(fa) | set(fb)) if fa.get(k, "(absent)") != fb.get(k, "(absent)")]


def compare_runs(a: Run, b: Run) -> dict[str, Any]:
    """Plain rows for the page: papers, claims (changed first), headline metrics, provenance changes."""
    pa, pb = {p["paper"]: p for p in a.papers}, {p["paper"]: p for p in b.papers}
    papers = [{"paper": k, "title": (pa.get(k) or pb.get(k)).get("title", k),
               "a": pa.get(k, {}).get("verdict", "absent"), "b": pb.get(k, {}).get("verdict", "absent")}
              for k in dict.fromkeys([*pa, *pb])]
    ca, cb = {c["key"]: c for c in a.claims}, {c["key"]: c for c in b.claims}
    claims = []
    for k in dict.fromkeys([*ca, *cb]):
        x, y = ca.get(k, {}), cb.get(k, {})
        claims.append({"key": k, "statement": (x or y).get("statement", ""), "paper": (x or y).get("paper", ""),
                       "a_verdict": x.get("verdict", "absent"), "b_verdict": y.get("verdict", "absent"),
                       "a_ours": x.get("ours", "absent"), "b_ours": y.get("ours", "absent"),
                       "a_intervals": x.get("intervals", ""), "b_intervals": y.get("intervals", ""),
                       "verdict_changed": x.get("verdict") != y.get("verdict"),
                       "changed": x.get("verdict") != y.get("verdict") or x.get("estimate") != y.get("estimate")})
    claims.sort(key=lambda c: (not c["verdict_changed"], not c["changed"]))
    prov = {name: _changes(a.record.get(name) or {}, b.record.get(name) or {})
            for name in ("config", "versions", "machine")}
    prov["commit"] = [{"Key": "git_commit", "A": a.record.get("git_commit", "unknown"),
                       "B": b.record.get("git_commit", "unknown")}]
    return {"papers": papers, "claims": claims, "metrics": _changes(a.metrics, b.metrics), "provenance": prov,
            "n_verdicts_changed": sum(c["verdict_changed"] for c in claims),
            "n_changed": sum(c["changed"] for c in claims)}


def render(a: Run, b: Run, out: Path) -> Path:
    from repshare.report import vega
    from repshare.report.render import css, environment

    view = compare_runs(a, b)
    nav = [{"href": out.name, "text": "Run diff", "broken": False}]
    html = environment().get_template("diff.html").render(
        site_title="repshare: two runs side by side", nav=nav, here=out.name, page_title="Run diff", css=css(),
        scripts=[], policy=vega.policy(False), version="", prov=None, a=a.label, b=b.label, **view)
    return write_text(out, html)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repshare.report.diff", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="results folder or git revision (the 'before' run)")
    ap.add_argument("b", help="results folder or git revision (the 'after' run)")
    ap.add_argument("--out", default="diff.html", help="the page to write (default: diff.html)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".html":
        print(f"error [diff]: --out {args.out!r} must name an .html file", file=sys.stderr)
        return 2
    try:
        path = render(read_run(args.a), read_run(args.b), out)
    except (ValueError, OSError) as err:
        print(f"error [diff]: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
