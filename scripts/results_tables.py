"""Print the verdict and claim tables of a finished run as Markdown (for docs/results.md and the README).

    python scripts/results_tables.py [RESULTS_DIR]      # default: results
    python scripts/results_tables.py --times            # each stage's seconds, from its *_run.json

Reads results/compare/verdicts.json and claims.json (checksums verified), so every number in the
printed tables is one the compare stage measured and judged; nothing is typed by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from repshare.utils.artifacts import read_json_verified


def fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def estimate_text(est: dict | None) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    text = fmt(est["value"])
    if est.get("lo") is not None and est.get("hi") is not None and est.get("method") != "exact":
        text += f" [{fmt(est['lo'])}, {fmt(est['hi'])}]"
    if not est.get("interpretable", True):
        text += " (not interpretable)"
    return text


def cell(text: str) -> str:
    return str(text).replace("|", "\\|")  # a literal | (as in |r|) would end the Markdown cell


def main(results: Path) -> None:
    verdicts = read_json_verified(results / "compare" / "verdicts.json", "compare")
    claims = read_json_verified(results / "compare" / "claims.json", "compare")["claims"]
    print("| paper | verdict | primary claims: holds / does not / inconclusive / not tested |")
    print("|---|---|---|")
    for p in verdicts["papers"]:
        c = p["primary_counts"]
        print(f"| {p['title']} ({p['citation']}) | **{p['verdict']}** | "
              f"{c['holds']} / {c['does not']} / {c['inconclusive']} / {c['not tested']} |")
    print()
    seeds = any(c.get("estimate_seeds") for c in claims)  # a seed study ran: show both intervals

    def shown(est: dict | None) -> str:
        over = f" ({est['over']}, n = {est['n']})" if est and est.get("value") is not None else ""
        return estimate_text(est) + over

    if seeds:
        print("| claim | paper | this run [95 % CI] (over) | judged: mean over seeds [interval] | region | "
              "verdict (from) |")
        print("|---|---|---|---|---|---|")
    else:
        print("| claim | paper | measured [95 % CI] (over) | region | verdict |")
        print("|---|---|---|---|---|")
    for c in claims:
        star = "" if c["primary"] else " (secondary)"
        if seeds:
            print(f"| `{c['key']}`{star} | {cell(c['paper_value'])} | {shown(c.get('estimate_run'))} | "
                  f"{shown(c.get('estimate'))} | {c['region_text']} | {c['verdict']} ({c.get('intervals')}) |")
        else:
            print(f"| `{c['key']}`{star} | {cell(c['paper_value'])} | {shown(c.get('estimate'))} | "
                  f"{c['region_text']} | {c['verdict']} |")


def times(results: Path, data: Path) -> None:
    """Seconds inside each stage (its own clock, from *_run.json; process start-up and DVC hashing not
    counted). A training stage's log is named after its model."""
    import json

    from repshare.stages import STAGES

    total = 0.0
    print("| stage | seconds |")
    print("|---|---|")
    for name in STAGES:
        model = name.removeprefix("train_")
        for f in (results / "metrics" / f"{name}_run.json", results / "metrics" / f"{model}_run.json",
                  data / f"{name}_run.json"):
            if f.is_file():
                sec = float(json.loads(f.read_text())["seconds"])
                total += sec
                print(f"| {name} | {sec:.0f} |")
                break
    print(f"| all stages | {total:.0f} |")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = Path(args[0]) if args else Path("results")
    if "--times" in sys.argv:
        times(root, root.parent / "data")
    else:
        main(root)
