"""Gemel's tables, comparison rows and dashboard section, from the study (:class:`repshare.gemel.study.Study`).

Nothing here judges the paper: the claim quantities go into ``measurements`` and the compare stage
applies the registry (:mod:`repshare.gemel.claims`). Durations (retraining seconds) never enter these
outputs, which DVC caches: they go to the run record (``results/metrics/gemel_run.json``).
"""

from __future__ import annotations

from repshare.claims import SanityCheck
from repshare.comparison import ComparisonRow, Figure, ReportSection, Table
from repshare.gemel.decision import meets_target_on_report
from repshare.gemel.measures import difference, from_replicates, point
from repshare.gemel.study import Study, processed_fraction, saved_bytes

METHOD = "gemel"
TITLE = "Gemel: merging identical layers across the workload"


def iteration_rows(st: Study, target: float) -> list[dict]:
    """One row per trial (iterations.json/csv and the figure): bytes and each model's select-split accuracy."""
    rows, saved_before = [], 0
    wb = st.workload_bytes
    for it in st.found.result.iterations:
        t = it.info["trial"]
        row = {"iteration": it.index, "group": it.group, "halved": it.halved, "layers": len(it.instances),
               "accepted": it.accepted, "robust": t.decision.robust, "trial_bytes": it.trial_bytes,
               "trial_pct": round(100 * it.trial_bytes / wb, 3), "saved_before_pct": round(100 * saved_before / wb, 3),
               "saved_bytes": it.cumulative_bytes, "saved_pct": round(100 * it.cumulative_bytes / wb, 3),
               "target": target, "retrain_images": t.retrain_images, "models": ",".join(t.models)}
        by = {m.model: m for m in t.decision.models}
        for n in st.sizes:
            m = by.get(n)
            row[f"before/{n}"] = t.before.get(n)
            row[f"after/{n}"] = m.after if m else None
            row[f"rel_after/{n}"] = round(m.after / m.unmerged, 4) if m and m.unmerged > 0 else None
            row[f"lower_bound/{n}"] = round(m.lower, 5) if m else None
        rows.append(row)
        saved_before = it.cumulative_bytes
    return rows


def decision_rows(st: Study) -> list[dict]:
    """Every model of every trial: the margin on the select split, its interval and the rule's outcome."""
    out = []
    for it in st.found.result.iterations:
        d = it.info["trial"].decision
        for m in d.models:
            out.append({"iteration": it.index, "model": m.model, "images": m.n, "unmerged": round(m.unmerged, 4),
                        "after": round(m.after, 4), "target x unmerged": round(m.target * m.unmerged, 4),
                        "margin": round(m.margin, 4), "95 % interval": f"[{m.lo:.4f}, {m.hi:.4f}]",
                        f"lower bound ({100 * (1 - d.alpha):g} %)": round(m.lower, 4), "SE": round(m.se, 4),
                        "passes": m.passed, "trial accepted": it.accepted, "robust": d.robust})
    return out


def layer_rows(st: Study) -> list[dict]:
    by_index = {x.index: x for x in st.instances}
    return [{"iteration": it.index, "instance": i, "accepted": it.accepted,
             **{n: by_index[i].members.get(n, "") for n in st.sizes}}
            for it in st.found.result.iterations for i in it.instances]


def report_rows(st: Study, target: float) -> list[dict]:
    """Per model on the report split: unmerged, Gemel, control, and the differences that matter."""
    rows = []
    rep, reps = st.report, st.reps
    meets = meets_target_on_report({n: point(o) for n, o in rep["gemel"].items()},
                                   {n: point(o) for n, o in rep["unmerged"].items()}, target)
    for n in st.sizes:
        u, g, c = rep["unmerged"][n], rep["gemel"][n], rep["control"][n]
        row = {"model": n, "unmerged": from_replicates(point(u), reps["unmerged"][n], u.n).text(4),
               "Gemel (merged)": from_replicates(point(g), reps["gemel"][n], g.n).text(4),
               "Gemel - unmerged": difference(g, u, reps["gemel"][n], reps["unmerged"][n]).text(4)}
        if st.control_ran:
            row["control (no merging)"] = from_replicates(point(c), reps["control"][n], c.n).text(4)
            row["control - unmerged"] = difference(c, u, reps["control"][n], reps["unmerged"][n]).text(4)
            row["Gemel - control"] = difference(g, c, reps["gemel"][n], reps["control"][n]).text(4)
        row["Gemel >= target x unmerged"] = meets[n]
        rows.append(row)
    return rows


def frames_rows(st: Study) -> list[dict]:
    out = []
    for name, r in st.at_claim.items():
        frac = processed_fraction(r)
        out.append({"workload": name, "budget (MB)": round(r.budget_bytes / 2**20, 3),
                    "frames processed (%)": round(100 * r.processed / r.frames, 2), "loads": r.loads,
                    **{f"{n} processed (%)": round(100 * f, 1) for n, f in frac.items()}})
    return out


def sweep_rows(st: Study) -> list[dict]:
    """The frames sweep (frames_sweep.csv and the figure); % more frames than unmerged at the same budget."""
    rows = [{"setting": r.setting, "budget_mb": round(r.budget_bytes / 2**20, 3), "processed": r.processed,
             "dropped": r.frames - r.processed, "frames": r.frames, "processed_pct": round(100 * r.processed / r.frames, 2),
             "loads": r.loads, "load_ms": r.load_ms} for r in st.sweep]
    for row in rows:
        ref = next(s for s in rows if s["setting"] == "unmerged" and s["budget_mb"] == row["budget_mb"])
        row["more_frames_pct"] = round(100.0 * (row["processed"] - ref["processed"]) / max(1, ref["processed"]), 2)
    return rows


def timing_rows(st: Study) -> list[dict]:
    rows = []
    for n in st.sizes:
        row = {"model": n, "weight bytes": st.sizes[n], "FLOPs / frame": st.flops[n],
               "load ms": round(st.load_ms[n], 3), "run ms / frame": round(st.run_ms[n], 3)}
        if st.timing_spread:
            sp = st.timing_spread[n]
            row["load ms (min-max)"] = f"{sp['load_ms'][0]:.2f}-{sp['load_ms'][2]:.2f}"
            row["run ms (min-max)"] = f"{sp['run_ms'][0]:.2f}-{sp['run_ms'][2]:.2f}"
        rows.append(row)
    return rows


def comparison_rows(st: Study, metrics: dict[str, str]) -> list[ComparisonRow]:
    """The merged workload (if any merge was accepted) and, beside it, the control."""
    rows = []
    base = {n: point(o) for n, o in st.report["unmerged"].items()}
    names = list(st.sizes)
    trials = st.found.trials
    common = dict(labels_used=True, retrain_seconds=0.0, extra_flops_per_image=0.0, metric=dict(metrics))
    duration = "durations are in results/metrics/gemel_run.json (kept out of DVC-cached outputs)"
    saved = saved_bytes(st.sets["decided"])
    if st.found.result.merged:
        acc = {n: point(o) for n, o in st.report["gemel"].items()}
        rows.append(ComparisonRow(
            method=METHOD, setting=f"Gemel: {saved / 2**20:.2f} MiB shared, {len(st.found.result.merged)} layers",
            models=names, bytes_saved=int(saved), bytes_saved_pct=round(100 * saved / st.workload_bytes, 4),
            accuracy=acc, accuracy_rel={n: acc[n] / base[n] if base[n] > 0 else 0.0 for n in names},
            retrain_images=int(sum(t.retrain_images for t in trials)),
            extra={"control": False, "accepted": sum(it.accepted for it in st.found.result.iterations),
                   "tried": len(trials), "retrain_seconds": duration}, **common))
    if st.control_ran:
        acc = {n: point(o) for n, o in st.report["control"].items()}
        accepted = [it.info["trial"] for it in st.found.result.iterations if it.accepted]
        rows.append(ComparisonRow(
            method=METHOD, setting="control: Gemel's joint retraining without merging", models=names,
            bytes_saved=0, bytes_saved_pct=0.0, accuracy=acc,
            accuracy_rel={n: acc[n] / base[n] if base[n] > 0 else 0.0 for n in names},
            retrain_images=int(sum(t.retrain_images for t in accepted)),
            extra={"control": True, "retrain_seconds": duration}, **common))
    return rows


def sanity(st: Study, bytes_total: int, bytes_distinct: int, target: float) -> list[SanityCheck]:
    saved = saved_bytes(st.sets["decided"])
    out = [SanityCheck("gemel.shared_once", "the merged workload holds each shared tensor once",
                       bytes_total - bytes_distinct == saved,
                       f"{bytes_total} bytes counted per model - {bytes_distinct} distinct = {saved} saved")]
    if st.control_ran:
        acc = [it.info["trial"] for it in st.found.result.iterations if it.accepted]
        out.append(SanityCheck("gemel.control_same_training", "the control saw the accepted trials' retraining",
                               True, f"{len(acc)} retrainings, seeds {[t.seed for t in acc]}, "
                                     f"{sum(t.retrain_images for t in acc)} images"))
    if st.found.result.merged:
        meets = meets_target_on_report({n: point(o) for n, o in st.report["gemel"].items()},
                                       {n: point(o) for n, o in st.report["unmerged"].items()}, target)
        out.append(SanityCheck("gemel.targets_on_report", "the merged models keep their targets on the report split "
                               "too (decided on the select split)", all(meets.values()),
                               ", ".join(f"{n}: {'yes' if v else 'no'}" for n, v in meets.items())))
    return out


def empty_section(reason: str) -> ReportSection:
    """Nothing to share: a valid section saying why (no measurements: the claims read 'not tested')."""
    return ReportSection(method=METHOD, title=TITLE, summary=reason)


def section(st: Study, workload: str, quoted: dict, select_name: str, rows_sanity: list[SanityCheck],
            target: float) -> ReportSection:
    """``quoted``: the settings the notes quote (lr, momentum, weight_decay, steps, batch_size, init, alpha,
    n_boot, timing, cost)."""
    its = st.found.result.iterations
    acc = sum(it.accepted for it in its)
    m = st.measurements
    headline = "; ".join(f"{k.removeprefix('gemel.')} {e.text(2)}" for k, e in m.items())
    summary = (f"{len(its)} merge trials on workload {workload!r} ({', '.join(st.sizes)}), {acc} accepted "
               f"({sum(it.info['trial'].decision.robust for it in its)} of {len(its)} decisions robust); "
               f"stop: {st.found.result.stop_reason}. Decisions on {select_name}; every number below on "
               f"{st.report['unmerged'][next(iter(st.sizes))].n} report images. {headline}."
               + (f" Not interpretable: {'; '.join(st.chance)} at chance." if st.chance else ""))
    tables = [
        Table("Report split: each model unmerged, merged (Gemel) and retrained without merging (control)",
              list(report_rows(st, target)[0]), report_rows(st, target),
              "Top-1 / COCO mAP@[.5:.95] with 95 % paired bootstrap intervals over the report images. The control "
              "gets exactly the retraining of every accepted trial (same models, loss weights, steps, batches, "
              "seeds) with no layer tied: 'Gemel - control' is what merging costs; 'control - unmerged' is what "
              "the retraining alone adds (not credited to merging)."),
        Table("Accept/reject decisions (select split)", list(decision_rows(st)[0]) if its else ["iteration"],
              decision_rows(st), "Margin = after - target x unmerged, paired on the same images; a trial is "
                                 "accepted only if every model's one-sided lower bound is >= 0; robust = the 95 % "
                                 "interval excludes 0 (accepted: all models; rejected: some model)."),
        Table("Frames processed at the claim budget", list(frames_rows(st)[0]), frames_rows(st),
              "GPU time-sharing simulation; robust / optimistic = the workload with every fragile decision "
              "flipped (the interval of memory saved and frames)."),
        Table("Time-sharing inputs", list(timing_rows(st)[0]), timing_rows(st),
              f"Load/run times: {quoted['timing']}."),
    ]
    if st.bandwidth:
        tables.append(Table("Frames gain vs the loading bandwidth (cost model, claim budget)", list(st.bandwidth[0]),
                            st.bandwidth, "Not a claim: how much swapping costs decides whether merging can recover "
                                          "frames; small models load fast, so the gain needs a slow load."))
    notes = [
        f"Joint retraining: lr {quoted['lr']}, momentum {quoted['momentum']}, weight decay {quoted['weight_decay']}, "
        f"{quoted['steps']} SGD steps of {quoted['batch_size']} images per model per trial; shared value starts from "
        f"{quoted['init']!r}; loss weights from the accuracy right after tying on {quoted['n_weights']} select images.",
        f"Accept rule: one-sided {100 * (1 - quoted['decision_alpha']):g} % lower bound of after - {target} x unmerged "
        f">= 0 for every retrained model ({quoted['n_boot']} paired bootstrap resamples of the select images).",
        "Query accuracy = mean over the models of (report accuracy x fraction of its frames processed); the "
        "slides do not define it and the reference code stops at per-model throughput.",
        "BatchNorm layers are never shared (per-model statistics), as in the reference.",
        *([f"Detector targets (images without boxes): {quoted['detector_targets']}; its accuracy is relative to "
           "the original model's, as Gemel measures it."] if "detector_targets" in quoted else []),
        "Retraining durations are in results/metrics/gemel_run.json, not here (outputs must not depend on the clock).",
    ]
    return ReportSection(
        method=METHOD, title=TITLE, summary=summary, tables=tables,
        figures=[Figure("figures/gemel_iterations.png", "Memory saved and per-model select-split accuracy per trial."),
                 Figure("figures/gemel_frames.png", "Frames processed vs memory budget, unmerged vs merged.")],
        notes=notes, measurements=dict(m), sanity=rows_sanity)
