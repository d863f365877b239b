"""Branch survival (MEEdge 3.2.2): drop branches that cannot help a multi-exit model.

A branch is dropped when
1. it cannot return before the original single-exit inference finishes
   (``latency_to_exit_s >= full_latency_s``), or
2. it is dominated: another branch is at least as fast and at least as accurate, and strictly
   better in one of the two (exact ties keep the branch listed first, so one of two identical
   branches survives).

``scope="global"`` compares every branch with every other (the issue's reading: a branch at a
later exit that is slower and no more accurate than an earlier one adds nothing to any
multi-exit model); ``"per_exit"`` only compares branches of the same exit (keeps more candidates
for placement). Every dropped branch records why.
"""

from __future__ import annotations

from collections.abc import Sequence

SCOPES = ("global", "per_exit")


def survival(profiles: Sequence[dict], full_latency_s: float, scope: str = "global",
             latency_key: str = "latency_to_exit_s", accuracy_key: str = "accuracy") -> list[tuple[bool, str | None]]:
    """(survived, drop reason or None) per profile, in order. Profiles need id, exit, latency, accuracy."""
    if scope not in SCOPES:
        raise ValueError(f"survival scope {scope!r} must be one of {', '.join(SCOPES)}")
    out: list[tuple[bool, str | None]] = []
    for k, p in enumerate(profiles):
        lat, acc = float(p[latency_key]), float(p[accuracy_key])
        if lat >= full_latency_s:
            out.append((False, f"too slow: returns at {lat * 1e3:.3f} ms, not before the single-exit "
                               f"inference ends ({full_latency_s * 1e3:.3f} ms)"))
            continue
        reason = None
        for j, q in enumerate(profiles):
            if j == k or (scope == "per_exit" and q["exit"] != p["exit"]):
                continue
            q_lat, q_acc = float(q[latency_key]), float(q[accuracy_key])
            if q_lat >= full_latency_s:
                continue  # a dropped-for-slowness branch dominates nothing
            better = q_lat <= lat and q_acc >= acc and (q_lat < lat or q_acc > acc)
            tie_first = q_lat == lat and q_acc == acc and j < k
            if better or tie_first:
                reason = (f"dominated by {q['id']} ({q_lat * 1e3:.3f} ms <= {lat * 1e3:.3f} ms, "
                          f"accuracy {q_acc:.4f} >= {acc:.4f})")
                break
        out.append((reason is None, reason))
    return out
