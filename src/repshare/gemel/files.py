"""What ``results/gemel/`` holds, written from the study into a (temporary) folder, and the DVC plot csvs.

Nothing written here depends on the clock: durations go to the run record only.
"""

from __future__ import annotations

from pathlib import Path

from repshare.comparison import ComparisonRow, ReportSection, write_rows, write_section
from repshare.gemel import section as sec
from repshare.gemel.figures import fig_frames, fig_iterations
from repshare.gemel.store import save_merged
from repshare.gemel.study import Study
from repshare.utils.io import csv_text, write_json, write_text


def write_results(folder: Path, st: Study, its: list[dict], sweep: list[dict], rows: list[ComparisonRow],
                  section: ReportSection, target: float, timing: str, workload: str) -> None:
    write_json(folder / "iterations.json", {"stop_reason": st.found.result.stop_reason, "target": target,
                                            "workload_bytes": st.workload_bytes, "decisions": sec.decision_rows(st),
                                            "iterations": its, "layers": sec.layer_rows(st)})
    write_text(folder / "iterations.csv", csv_text(its))
    write_text(folder / "frames_sweep.csv", csv_text(sweep))
    write_json(folder / "frames_sweep.json", {"load_ms": st.load_ms, "run_ms": st.run_ms, "flops": st.flops,
                                              "sizes_bytes": st.sizes, "timing": timing, "sweep": sweep,
                                              "claim_budget": sec.frames_rows(st)})
    save_merged(st.found.final, st.found.result.merged, folder / "merged",
                {"workload": workload, "bytes_per_model_sum": st.found.bytes_total,
                 "bytes_distinct": st.found.bytes_distinct})
    (folder / "figures").mkdir()
    fig_iterations(its, list(st.sizes), folder / "figures" / "gemel_iterations")
    fig_frames(sweep, folder / "figures" / "gemel_frames")
    write_rows(folder / "comparison_rows.json", sec.METHOD, rows)
    write_section(folder / "section.json", section)


def write_empty(folder: Path, reason: str) -> None:
    """Nothing to share: a valid empty result (no rows, a section saying why)."""
    write_json(folder / "iterations.json", {"stop_reason": reason, "iterations": [], "layers": []})
    write_rows(folder / "comparison_rows.json", sec.METHOD, [])
    write_section(folder / "section.json", sec.empty_section(reason))


def write_plots(results: Path, its: list[dict], sweep: list[dict]) -> None:
    """The DVC plot csvs (header only when there is nothing to plot)."""
    def text(rows: list[dict], header: str) -> str:
        return csv_text(rows) if rows else header + "\n"

    write_text(results / "plots" / "gemel_iterations.csv", text(
        [{"iteration": r["iteration"], "saved_pct": r["saved_pct"], "accepted": int(r["accepted"])} for r in its],
        "iteration,saved_pct,accepted"))
    write_text(results / "plots" / "gemel_frames.csv", text(
        [{"budget_mb": r["budget_mb"], "setting": r["setting"], "processed_pct": r["processed_pct"]} for r in sweep],
        "budget_mb,setting,processed_pct"))


def metrics(st: Study, its: list[dict], rows: list[ComparisonRow]) -> dict:
    """results/metrics/gemel.json: counts and the claim quantities' point values."""
    return {"accepted": sum(r["accepted"] for r in its), "tried": len(its), "robust": sum(r["robust"] for r in its),
            "bytes_saved": max((r.bytes_saved for r in rows), default=0), "stop_reason": st.found.result.stop_reason,
            **{k.removeprefix("gemel."): round(float(e.value), 3) for k, e in st.measurements.items()}}

