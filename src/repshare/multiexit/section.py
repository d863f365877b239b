"""MEEdge part 1's dashboard section (key ``meedge``), sanity checks and comparison rows, from the
study's rows and the measurements. The section does not judge: its ``measurements`` carry the
quantities :mod:`repshare.multiexit.claims` names; the compare stage applies the verdict rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repshare.claims import SanityCheck
from repshare.comparison import ComparisonRow, Figure, ReportSection, Table
from repshare.stats import Estimate, t_interval

METHOD = "meedge"
FIGURES = ("acc_vs_latency.png", "self_vs_twin.png", "kd_curve.png")  # in the section's folder


@dataclass(frozen=True)
class Settings:
    """The configuration values the section quotes (plain values, for its notes and captions)."""

    train_lr: float
    train_epochs: float
    pool: int
    survival_scope: str
    kd_a: float
    kd_b: float
    kd_temperature: float
    kd_fraction: float
    kd_seeds: tuple[int, ...]
    latency_source: str
    flops_per_s: float
    call_overhead_s: float


def seeds_text(accs: list[float]) -> str:
    """Mean over seeds with its t interval, e.g. '0.912 [0.890, 0.934] (3 seeds)'."""
    return t_interval(accs).text() if accs else "n/a"


def comparison_rows(rec: list[dict], surv: list[dict], workload_bytes: int, final_acc: float, st: Settings,
                    kd_cost: dict[str, tuple[float, int]]) -> list[ComparisonRow]:
    """Rows for the cross-method comparison: merge alone, merge + few-shot KD, and the control (the same
    KD without merging: its extra training, nothing saved). ``kd_cost``: setting -> (modelled seconds, images)."""
    if not rec:
        return []
    saved = 4 * sum(r["params_saved"] for r in rec)
    branch_bytes = 4 * sum(p["params"] for p in surv)
    mean = lambda k: float(np.mean([r[k] for r in rec]))  # noqa: E731
    extra = {"branches": len(rec), "survivors": len(surv), "surviving_branch_bytes": branch_bytes,
             "branch_bytes_saved_pct": 100.0 * saved / branch_bytes if branch_bytes else 0.0,
             "mean_branch_acc_original": mean("accuracy"), "mean_branch_acc_merged": mean("acc_merged"),
             "retrain_seconds_source": "cost model: 3 x forward FLOPs x images / multiexit.latency.flops_per_s",
             "note": "final exit unchanged (frozen backbone); savings are in the branches' storage"}

    def row(setting: str, bytes_saved: int, cost: tuple[float, int], acc_key: str) -> ComparisonRow:
        return ComparisonRow(
            method=METHOD, setting=setting, models=["classifier"], bytes_saved=int(bytes_saved),
            bytes_saved_pct=100.0 * bytes_saved / workload_bytes if workload_bytes else 0.0,
            accuracy={"classifier": final_acc}, accuracy_rel={"classifier": 1.0}, labels_used=True,
            retrain_seconds=float(cost[0]), retrain_images=int(cost[1]), extra_flops_per_image=0.0,
            metric={"classifier": "top1"}, extra={**extra, "mean_branch_acc": mean(acc_key)})

    kd = f"{st.kd_fraction:.0%} of the pool, a={st.kd_a}, b={st.kd_b}, {len(st.kd_seeds)} seeds"
    return [row(f"self-merge of {len(rec)} surviving branches (1/3-1/2 rule), no retraining", saved, (0.0, 0), "acc_merged"),
            row(f"self-merge + few-shot KD ({kd})", saved, kd_cost["kd"], "acc_recovered"),
            row(f"control: the same few-shot KD without merging ({kd})", 0, kd_cost["control"], "acc_control")]


def sanity_checks(zoo: dict, merge: dict, rec: list[dict]) -> list[SanityCheck]:
    """Checks that hold by construction: shown apart, never claims."""
    surv = [p for p in zoo["branches"] if p["survived"]]
    lo, hi = merge["range"]
    done = [r for r in merge["branches"] if r["merged"]]
    out = [
        SanityCheck("meedge.survivors_return_early", "every survivor returns before the single-exit inference ends "
                    f"({zoo['latency_source']} latencies)", all(p["latency_to_exit_s"] < zoo["full_latency_s"] for p in surv),
                    f"{len(surv)} survivors"),
        SanityCheck("meedge.merge_saves_parameters", "every self-merged survivor stores fewer parameters",
                    all(r["merged_params"] < r["params"] for r in done), f"{len(done)} merged"),
        SanityCheck("meedge.rule_in_window", "the rule's fraction lies in the configured window",
                    all(r["n_pairs"] == 0 or lo - 1e-9 <= r["fraction"] <= hi + 1e-9 for r in done),
                    f"window [{lo:.3f}, {hi:.3f}]"),
        SanityCheck("meedge.control_same_training", "the control saw exactly the images KD after merging saw",
                    all(r["kd_images"] == r["control_images"] for r in rec), f"{len(rec)} branches"),
    ]
    if merge["curves"]:
        out.append(SanityCheck(
            "meedge.self_equals_twin_at_equal_fraction",
            "at equal fractions of their candidate pairs, self-merging both branches saves as many parameters as "
            "twin-merging the pair (to one neuron pair per layer): any gap in the saved-memory ratio comes from the "
            "fractions the rule picks", all(c["equal_at_equal_fraction"] for c in merge["curves"]),
            f"{len(merge['curves'])} pairs"))
    return out


def build_section(zoo: dict, merge: dict, rec: list[dict], curves: list[dict], st: Settings,
                  measurements: dict[str, Estimate], sanity: list[SanityCheck]) -> ReportSection:
    prof = zoo["branches"]
    surv = [p for p in prof if p["survived"]]
    ms = lambda s: round(s * 1e3, 3)  # noqa: E731
    per_exit = [{"exit": e, "trained": len(mine), "survived": sum(p["survived"] for p in mine),
                 "best select top-1": round(max(p["accuracy_select"] for p in mine), 4),
                 "best val top-1": round(max(p["accuracy"] for p in mine), 4),
                 "fastest (ms)": ms(min(p["latency_to_exit_s"] for p in mine))}
                for e in sorted({p["exit"] for p in prof}) for mine in [[p for p in prof if p["exit"] == e]]]
    by_id = {r["id"]: r for r in rec}
    surv_rows = [{"branch": p["id"], "structure": p["structure"], "params": p["params"],
                  "latency to exit (ms)": ms(p["latency_to_exit_s"]), "select top-1": round(p["accuracy_select"], 4),
                  "val top-1": round(p["accuracy"], 4),
                  "merged params": by_id[p["id"]]["merged_params"] if p["id"] in by_id else None,
                  "merged top-1": round(by_id[p["id"]]["acc_merged"], 4) if p["id"] in by_id else None,
                  "merged + KD top-1": seeds_text(by_id[p["id"]]["acc_recovered_seeds"]) if p["id"] in by_id else "n/a",
                  "KD without merging (control)": seeds_text(by_id[p["id"]]["acc_control_seeds"]) if p["id"] in by_id else "n/a"}
                 for p in surv]
    twin_rows = [{"pair": t["pair"], "self saved (params)": t["self_params_saved"],
                  "twin saved (params)": t["twin_params_saved"],
                  "self top-1": ", ".join(f"{a:.4f}" for a in t["self_acc"]),
                  "twin top-1": ", ".join(f"{a:.4f}" for a in t["twin_acc"]),
                  "original top-1": ", ".join(f"{a:.4f}" for a in t["acc_original"])} for t in merge["twin"]]
    curve_rows = [{"branch": c["id"], "fraction": round(p["fraction"], 4), "merged pairs": p["n_pairs"],
                   "merged top-1": round(p["acc_merged"], 4), "merged + KD top-1": round(p["acc_recovered"], 4),
                   "KD without merging": round(c["control"], 4), "original top-1": round(c["original"], 4)}
                  for c in curves for p in c["points"]]
    lat = (f"modelled: {st.call_overhead_s * 1e6:g} us per call + FLOPs / {st.flops_per_s / 1e9:g} GFLOP/s"
           if st.latency_source == "flops" else "measured at batch 1 (median of repeats; spreads in profiles.json)")
    tables = [Table("Zoo per exit", list(per_exit[0]) if per_exit else ["exit"], per_exit,
                    f"latency = backbone to the exit + branch, batch 1, {lat}; single-exit inference ends at "
                    f"{ms(zoo['full_latency_s'])} ms"),
              Table("Surviving branches: trained, self-merged, recovered, and the control",
                    list(surv_rows[0]) if surv_rows else ["branch"], surv_rows,
                    f"val top-1; KD columns: mean [95 % t interval] over the seeds {list(st.kd_seeds)} (few-shot subset "
                    "and batch order); the control is the same KD on the unmerged branch")]
    if twin_rows:
        tables.append(Table("Self-merge vs twin-merge (same branches, 1/3-1/2 rule)", list(twin_rows[0]), twin_rows))
    if curve_rows:
        tables.append(Table("Fig. 9(c): merged fraction vs recovered top-1", list(curve_rows[0]), curve_rows,
                            "val top-1; KD columns are means over the curve's seeds"))
    captions = ("Every zoo branch per exit: val top-1 vs latency to the exit; survivors (decided on select) red, "
                "the dashed line is the end of single-exit inference",
                "Mean val top-1 of two same-shape branches vs kB saved: self-merging each vs twin-merging the pair "
                "(stars: the rule's choice)",
                "Fig. 9(c): val top-1 after merging (grey) and after few-shot KD (blue) vs merged pairs; dotted: the "
                "trained branch, dashed: the same KD without merging (control); green band = the 1/3-1/2 window")
    present = (True, bool(merge["curves"]), bool(curves))
    figures = [Figure(f, c) for f, c, ok in zip(FIGURES, captions, present) if ok]
    notes = [
        f"Backbone frozen; every branch trains on cached exit features of {zoo['n_fit']} train images, Adam lr "
        f"{st.train_lr}, {st.train_epochs} epochs.",
        f"Decisions (survival, the merge rule's fraction, twin pairs, structure choices) use {zoo['n_select']} select "
        f"images ({zoo['select_source']}); every accuracy shown is on {zoo['n_val']} val images.",
        f"Branch = conv part (0-3 layers) + adaptive avg pool to at most {st.pool}x{st.pool} + 1-3 FC layers "
        "(multiexit.zoo.pool: the paper leaves the FC input size open).",
        f"Survival scope: {st.survival_scope} (multiexit.survival.scope); latencies {lat}.",
        "Self-merge merges hidden FC layers only (multiexit.merge.include_output); the fraction applies to each "
        "layer's candidate pairs.",
        f"KD: a={st.kd_a}, b={st.kd_b}, T={st.kd_temperature}, {st.kd_fraction:.0%} of the training pool; MSE = Brier "
        "score (summed over classes); L1 as a proximal step after each Adam step (multiexit.kd.*). The control runs "
        "the same KD (same subsets, seeds, epochs) on the unmerged branch, so extra training is not credited to merging.",
        "Intervals: paired percentile bootstrap over val images (KD correctness averaged over seeds first); the "
        "self/twin memory ratio's interval re-runs the rule's choice on bootstrap resamples of the select images.",
    ]
    flagged: dict[str, list[str]] = {}
    for key, est in sorted(measurements.items()):
        if not est.interpretable:
            flagged.setdefault(est.note.split("; ")[-1], []).append(key)
    for why, keys in flagged.items():
        which = "every measurement" if len(keys) == len(measurements) else ", ".join(keys)
        notes.append(f"Not interpretable ({which}): {why}.")
    saved = 4 * sum(r["params_saved"] for r in rec)
    summary = (f"{len(prof)} branches trained over exits {zoo['backbone']['exits']} of the frozen classifier "
               f"(final val top-1 {zoo['backbone']['final_accuracy']:.4f}); {len(surv)} survived; {len(rec)} "
               f"self-merged and recovered with few-shot KD, saving {saved / 1024:.1f} kB of branch weights.")
    return ReportSection(method=METHOD, title="MEEdge part 1: branch zoo, survival, self-merge, few-shot KD",
                         summary=summary, tables=tables, figures=figures, notes=notes,
                         measurements=dict(sorted(measurements.items())), sanity=sanity)
