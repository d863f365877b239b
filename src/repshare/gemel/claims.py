"""The paper's claims this topic tests, for the one verdict rule (:mod:`repshare.claims`).

``QUANTITIES``: every quantity this topic's study measures that a claim may name (key -> what it is).
``CLAIMS``: the paper's claims, each with its number, where it is in the paper, subset and tolerance.
Source: the NSDI'23 talk slides (``shared/papers/gemel_nsdi23_slides.txt``; line numbers of that file).
"""

from __future__ import annotations

from repshare.claims import Claim

QUANTITIES: dict[str, str] = {
    "gemel.memory_saved_pct": (
        "weight bytes no longer stored after Gemel's accepted merges, % of the workload's weight bytes; exact given "
        "the accept/reject decisions, interval = the fragile decisions flipped"),
    "gemel.more_frames_pct": (
        "% more frames processed by the merged than by the unmerged workload in the GPU time-sharing simulation, at "
        "the 50 % memory level, load/run times from the deterministic cost model"),
    "gemel.query_accuracy_gain_pct": (
        "% gain in per-workload query accuracy (mean over the models of report accuracy x fraction of frames "
        "processed) of the merged workload over the control (the same joint retraining without merging), at the "
        "50 % memory level; paired bootstrap over the report images"),
    "gemel.query_accuracy_gain_vs_unmerged_pct": (
        "the same gain over the original unmerged models (credits the retraining too: shown, not judged)"),
}

_SUBSET = "the embedded workload (shape classifier, detector, colour classifier); the paper: its traffic workloads"
_ROUNDING = "the slides print whole percentages, so the range is known to half a point"

CLAIMS: tuple[Claim, ...] = (
    Claim("gemel.memory_saved", "gemel", "Gemel reduces per-workload memory usage by 17-86 %", "17-86 %",
          "talk slides, 'Benefits' (line 615: 'Reduce per-workload memory usage by 17-86%')",
          "gemel.memory_saved_pct", _SUBSET, 17.0, 86.0, 0.5, _ROUNDING, primary=True, unit="%"),
    Claim("gemel.memory_saved_evaluation", "gemel", "Gemel reduces per-workload memory usage by 18-61 % (evaluation)",
          "18-61 %", "talk slides, evaluation, 'Memory Savings Achieved' (line 884)",
          "gemel.memory_saved_pct", _SUBSET, 18.0, 61.0, 0.5, _ROUNDING, primary=False, unit="%"),
    Claim("gemel.more_frames", "gemel", "Gemel processes 13-44 % more frames (less time blocked on swapping)",
          "13-44 %", "talk slides, evaluation, 'Improvement in Query Accuracy' (line 850: 'Reduce time blocked on "
          "swapping delays by 17-84% -> process 13-44% more frames')",
          "gemel.more_frames_pct", _SUBSET + "; simulated edge box at the 50 % memory level", 13.0, 44.0, 0.5,
          _ROUNDING, primary=True, unit="%"),
    Claim("gemel.more_frames_talk", "gemel", "Gemel processes 29-61 % more frames (talk summary)", "29-61 %",
          "talk slides, 'Benefits' (line 647: 'Process 29-61% more frames!')",
          "gemel.more_frames_pct", _SUBSET + "; simulated edge box at the 50 % memory level", 29.0, 61.0, 0.5,
          _ROUNDING, primary=False, unit="%"),
    Claim("gemel.query_accuracy", "gemel", "Gemel improves per-workload query accuracy by 2-60 %", "2-60 %",
          "talk slides, evaluation, 'Improvement in Query Accuracy' (line 841)",
          "gemel.query_accuracy_gain_pct", _SUBSET + "; report split, 50 % memory level, against the control",
          2.0, 60.0, 0.5, _ROUNDING, primary=True, unit="%"),
)
