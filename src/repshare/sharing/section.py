"""The CKA-sharing study as the dashboard shows it: report section, comparison rows, DVC metrics and plots.

Rows and estimates in (:mod:`repshare.sharing.study`), plain documents out; nothing here reads a
file or the config. The section does not judge: it carries the claims' quantities as
``measurements`` (the compare stage applies the registry and the one verdict rule) and shows apart,
as sanity checks, what holds by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from repshare.claims import SanityCheck
from repshare.comparison import ComparisonRow, Figure, ReportSection, Table
from repshare.sharing.claims import QUANTITIES
from repshare.sharing.correlation import find_row
from repshare.sharing.study import Study

METHOD = "cka_sharing"
TITLE = "Representation sharing guided by CKA (Cao et al., MobiCom'24) and beyond"
LABELS = {"S": "CKA S", "params": "#Params", "size": "Size", "flops": "FLOPs", "agree": "agreement",
          "S_x_agree": "CKA x agreement"}


@dataclass(frozen=True)
class Context:
    """What the section states besides the study: the run's settings, in words and numbers."""

    estimator: str  # cka.estimator
    n_cka: int  # images behind CKA
    n_eval: int  # report images of the paper's setting
    n_common: int  # report images every merge was scored on
    calibration: str  # e.g. "256 images of the 'select' split"
    flops_per_s: float  # the cost model's rate (retrain_seconds)
    bytes_source: str
    budget_fracs: tuple[float, ...]
    accuracy_floor: float | None
    paper_r: dict[str, float]


def clean(v: Any) -> Any:
    """nan/inf -> None so a JSON file is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def fmt_r(row: dict | None) -> str:
    if not row or row.get("r") is None or not math.isfinite(row["r"]):
        return "n/a"
    lo, hi = row.get("ci_low", math.nan), row.get("ci_high", math.nan)
    ci = f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{row['r']:.2f}{ci} (n={row['n']})"


def headline_metrics(st: Study, models: dict[str, dict], baseline: dict) -> dict[str, Any]:
    """The flat DVC metrics of ``results/metrics.json``: the numbers the verdicts use (no provenance)."""
    m: dict[str, Any] = {}
    for key, metric, kind in (("same_S", "S", "same"), ("cross_S", "S", "cross"), ("all_S", "S", "all"),
                              ("params_same", "params", "same"), ("size_same", "size", "same"),
                              ("flops_same", "flops", "same")):
        row = find_row(st.rows, metric, kind) or {}
        m[f"r_{key}"] = row.get("r")
        m[f"r_{key}_ci_low"] = row.get("ci_low")
        m[f"r_{key}_ci_high"] = row.get("ci_high")
    m["s_prime"] = st.hinge.get("s_prime")
    m["acc_below_s_prime"] = st.hinge.get("floor")
    m["classifier_top1"] = models["classifier"].get("top1")
    m["detector_map"] = models["detector"].get("map")
    m["detector_map_50"] = models["detector"].get("map_50")
    m["baseline_acc"] = baseline.get("acc")
    m["n_images"] = baseline.get("n")
    if len(st.pairs):
        best = st.pairs.loc[st.pairs["acc"].idxmax()]
        m.update(best_merged_acc=float(best["acc"]), best_merged_i=int(best["i"]), best_merged_j=int(best["j"]))
        m["n_pairs"] = int(len(st.pairs))
    m["interpretable"] = not st.chance_note
    m.update({k: e.value for k, e in st.measured.items()})
    for p, h in st.head.items():
        best = h.get("best_label_free_all_pairs")
        if best:
            m[f"{p}/best_label_free"] = best
            for kind in ("same", "cross"):
                row = h.get(f"{best}/r_S_{kind}")
                m[f"{p}/best_label_free_r_S_{kind}"] = row["r"] if row else None
        sub = h.get("trained_subset")
        if sub:
            m[f"{p}/recovered_frac_vs_supervised"] = sub["recovered_frac"]
    for r in st.regrets:
        m[f"{r['protocol']}/regret/{r['predictor']}"] = r["mean_regret"]
    return {k: clean(float(v)) if isinstance(v, float) else v for k, v in m.items()}


def comparison_rows(st: Study, merges: dict, total_bytes: float, chosen: dict[tuple, list[str]],
                    flops_per_s: float, name: str = "classifier") -> list[ComparisonRow]:
    """One row per merge; retrain_seconds from the cost model (fitting FLOPs / ``flops_per_s``)."""
    base = merges["baselines"]
    rows = []
    for r in st.merges.itertuples(index=False):
        b = base[r.protocol]
        base_acc = b["acc"] if r.n == b["n"] else b["acc_variants"]
        # Under the shared protocol the detector's backbone runs a second time, at the classifier's input.
        extra = r.adapter_flops - r.flops + (r.flops_shared if r.protocol == "shared" else 0.0)
        rows.append(ComparisonRow(
            method=METHOD,
            setting=f"pair ({r.i}, {r.j}), adapter {r.adapter}, {r.protocol.replace('_', '-')} input",
            models=[name], bytes_saved=int(r.bytes_saved), bytes_saved_pct=100.0 * float(r.bytes_saved) / total_bytes,
            accuracy={name: float(r.acc)}, accuracy_rel={name: float(r.acc) / base_acc if base_acc else 0.0},
            labels_used=bool(r.labels_used), retrain_seconds=float(r.fit_flops) / flops_per_s,
            retrain_images=int(r.fit_images), extra_flops_per_image=float(extra), metric={name: "top1"},
            extra={"protocol": r.protocol, "adapter": r.adapter, "i": int(r.i), "j": int(r.j), "kind": r.kind,
                   "cka": float(r.S), "agreement": float(r.agree), "n_images": int(r.n),
                   "adapter_bytes": int(r.adapter_bytes), "fit_flops": float(r.fit_flops),
                   "chosen_by_search": chosen.get((r.protocol, r.adapter, int(r.i), int(r.j)), [])},
        ))
    return rows


def sanity_checks(st: Study, estimator: str = "full_biased") -> list[SanityCheck]:
    """What holds by construction: shown apart, never a claim. CKA lies in [0, 1] by construction only for
    the biased estimator (PSD kernels, Cauchy-Schwarz); the unbiased minibatch one can dip below 0 by noise."""
    mdf = st.merges
    out = [SanityCheck("cka.cka_in_unit_interval", "every CKA value lies in [0, 1] (linear kernels are positive "
                       "semi-definite)", bool(((mdf["S"] >= -1e-9) & (mdf["S"] <= 1 + 1e-9)).all()),
                       f"min {mdf['S'].min():.4f}, max {mdf['S'].max():.4f}")] if estimator == "full_biased" else []
    out += [SanityCheck("cka.only_supervised_reads_labels", "only the supervised adapter read labels",
                       bool((mdf["labels_used"] == (mdf["adapter"] == "supervised")).all())),
           SanityCheck("cka.bytes_saved", "bytes saved = classifier bytes off-loaded - the adapter's own bytes",
                       bool(((mdf["bytes_offloaded"] - mdf["adapter_bytes"]) == mdf["bytes_saved"]).all()))]
    if len(st.pairs):
        n = st.pairs["n"]
        out.append(SanityCheck("cka.one_n", "the paper's setting is scored on the same report images for every pair",
                               bool((n == n.iloc[0]).all()), f"n = {int(n.iloc[0])} images"))
    return out


def _tables(st: Study, ctx: Context) -> list[Table]:
    mdf, corr, head = st.merges, st.corr, st.head
    meas = Table("The paper's claims: measured quantities (paper's setting, report split)",
                 ["quantity", "what", "ours", "interpretable"],
                 [{"quantity": k, "what": QUANTITIES.get(k, ""), "ours": e.text(),
                   "interpretable": "yes" if e.interpretable else f"no: {e.note.split(';')[0]}"}
                  for k, e in st.measured.items()],
                 "Intervals: 95 % percentile bootstrap over pairs and report images together. The compare stage "
                 "judges the claims on these (holds / does not / inconclusive).")
    ctrl_rows = []
    for metric, key in (("S", "same_stage_S"), ("params", "params"), ("size", "size"), ("flops", "flops")):
        ctrl_rows.append({"predictor": LABELS[metric], "paper |r| (same-stage)": ctx.paper_r.get(key),
                          "ours r, same-stage": fmt_r(find_row(st.rows, metric, "same")),
                          "ours r, cross-stage": fmt_r(find_row(st.rows, metric, "cross")),
                          "ours r, all pairs": fmt_r(find_row(st.rows, metric, "all"))})
    ctrl = Table("Controls: which metric predicts merged accuracy (paper's setting; Fig. 3)",
                 list(ctrl_rows[0]), ctrl_rows,
                 "The paper compares CKA with #Params, Size and FLOPs on its same-stage pairs; our cross-stage and "
                 "pooled values are shown for context. Signed r with its 95 % interval over pairs and images.")
    corr_tab = Table("Pearson r with merged accuracy, per predictor, kind, adapter and protocol",
                     ["protocol", "adapter", "predictor", "kind", "r", "95% CI", "Spearman rho", "pairs"],
                     [{"protocol": r["protocol"], "adapter": r["adapter"], "predictor": r["metric"], "kind": r["kind"],
                       "r": clean(r["r"]), "95% CI": fmt_r(r).split(" (")[0].partition(" ")[2] or "n/a",
                       "Spearman rho": clean(r["rho"]), "pairs": r["n"]} for r in corr],
                     "S = CKA of the pair under the protocol; agree = agreement with the unmerged classifier on the "
                     "report images (no labels); S_x_agree = their product. Each cell on all report images its merges "
                     f"were scored on ({ctx.n_eval} for resample/per-model, {ctx.n_common} for the others); "
                     "intervals over pairs and images.")
    summ = []
    for (p, ad), sub in mdf.groupby(["protocol", "adapter"], sort=False):
        summ.append({"protocol": p, "adapter": ad, "pairs": int(len(sub)),
                     f"mean acc (same, {ctx.n_common} images)": clean(float(sub[sub.kind == "same"]["acc_common"].mean())),
                     f"mean acc (cross, {ctx.n_common} images)": clean(float(sub[sub.kind == "cross"]["acc_common"].mean())),
                     "best acc": float(sub["acc_common"].max()), "mean agreement": float(sub["agree"].mean()),
                     "labels used": bool(sub["labels_used"].any()),
                     "fit GFLOPs (sum)": round(float(sub["fit_flops"].sum()) / 1e9, 3)})
    summ_tab = Table("Merged accuracy per adapter and protocol (on the report images every merge shares)",
                     list(summ[0]), summ, "")
    reg_tab = Table("Sharing-point search: regret per predictor (oracle accuracy - chosen accuracy)",
                    ["protocol", "predictor", "budgets", "mean_regret", "max_regret", "mean_chosen_acc", "mean_oracle_acc"],
                    [{k: clean(v) for k, v in r.items()} for r in st.regrets],
                    "Candidates: label-free merges only, scored on the first " f"{ctx.n_common} report images; "
                    "budgets = " + ", ".join(f"{f:g}" for f in ctx.budget_fracs) + " x the classifier's bytes; ties "
                    f"scored as a random pick among the tied merges; floor on agreement: {ctx.accuracy_floor}.")
    head_rows = []
    for p, h in head.items():
        best = h.get("best_label_free_all_pairs")
        for kind in ("same", "cross"):
            head_rows.append({"protocol": p, "kind": kind, "resample r(CKA, acc)": fmt_r(h.get(f"resample/r_S_{kind}")),
                              "best label-free adapter": best, "its r(CKA, acc)": fmt_r(h.get(f"{best}/r_S_{kind}")),
                              "its r(agreement, acc)": fmt_r(h.get(f"{best}/r_agree_{kind}"))})
    head_tab = Table("CKA as a predictor with the paper's adapter vs the best label-free adapter",
                     ["protocol", "kind", "resample r(CKA, acc)", "best label-free adapter", "its r(CKA, acc)",
                      "its r(agreement, acc)"], head_rows,
                     f"Best label-free adapter = highest mean accuracy over all pairs on the {ctx.n_common} shared "
                     f"images; r of resample under per-model input = the paper's setting on all {ctx.n_eval} images.")
    tables = [meas, ctrl, head_tab, summ_tab, corr_tab, reg_tab]
    rec_rows = []
    for p, h in head.items():
        t = h.get("trained_subset")
        if t:
            rec_rows.append({"protocol": p, "pairs": str(t["pairs"]),
                             **{f"mean acc {k}": v for k, v in t["mean_acc"].items()},
                             "best label-free": t["best_label_free"], "recovered fraction": clean(t["recovered_frac"])})
    if rec_rows:
        cols = list(dict.fromkeys(k for r in rec_rows for k in r))
        tables.append(Table("Label-free recovery vs the supervised upper bound (trained-adapter pairs)", cols,
                            [{c: r.get(c) for c in cols} for r in rec_rows],
                            "recovered fraction = (best label-free - resample) / (supervised - resample), mean accuracy "
                            f"over the pairs where the trained adapters ran, on the {ctx.n_common} shared images."))
    return tables


def section(st: Study, ctx: Context, figures: list[Figure]) -> ReportSection:
    mdf = st.merges
    cells = list(dict.fromkeys(zip(mdf["protocol"], mdf["adapter"])))
    e = st.measured

    def txt(key: str) -> str:
        return e[key].text(2) if key in e else "not measured"

    summary = (f"Representation sharing between an EfficientDet-D0 backbone and an EfficientNet-B0 classifier: "
               f"{len(cells)} (protocol, adapter) settings, up to {int(mdf.groupby(['protocol', 'adapter']).size().max())} "
               f"(i, j) pairs each. The paper's setting (resample adapter, per-model input; CKA and top-1 on the same "
               f"first {ctx.n_eval} report images) gives |r|(acc, CKA) = {txt('cka.abs_r_same')} same-stage and "
               f"{txt('cka.abs_r_cross')} cross-stage (paper: 0.94 / 0.99); hinge S' = {txt('cka.s_prime')} "
               "(paper: 0.4). Fitted adapters (moments, lstsq: no labels) and the label-free agreement predictor are "
               "compared with the supervised upper bound; the search picks a sharing point under a memory budget "
               "without labels." + (f" Not interpretable: {st.chance_note}." if st.chance_note else ""))
    notes = [
        f"CKA: {ctx.estimator} on {ctx.n_cka} report images"
        + (" (the paper's Eq. 1: biased HSIC on the whole set)." if ctx.estimator == "full_biased" else "."),
        "S' as the paper defines it (accuracy extremely low below it, almost linear in S above it), measured by a "
        "least-squares hinge acc = a + b max(0, S - S') on the same-stage pairs: S' is its breakpoint, a its accuracy "
        "below S'.",
        "Intervals of every r: each bootstrap replicate resamples the report images (one resample for all merges) "
        "and the pairs; 'CKA beats X' = |r_S| - |r_X| on the same replicate. CKA itself is not resampled.",
        f"Adapters are fitted on {ctx.calibration}, apart from the report split; the budget search and adapter "
        f"means use the first {ctx.n_common} report images (every merge was scored on them).",
        "Adapter bytes are subtracted from the bytes freed; the fixed adapter's channel index adds none. "
        f"bytes_saved_pct is relative to {ctx.bytes_source}.",
        "Under the shared protocol the detector's backbone must run a second time at the classifier's input: its "
        "FLOPs are added to extra_flops_per_image of those rows.",
        "Fitting cost is counted in FLOPs (forward passes of the calibration images; 3 x forward per trained image); "
        f"retrain_seconds = FLOPs / {ctx.flops_per_s:.3g} FLOP/s (the project's cost model), the same on every machine.",
    ]
    return ReportSection(method=METHOD, title=TITLE, summary=summary, tables=_tables(st, ctx), figures=figures,
                         notes=notes, measurements=dict(st.measured), sanity=sanity_checks(st, ctx.estimator))


def frame_rows(rows: pd.DataFrame | list[dict]) -> list[dict]:
    """A table as csv rows (NaN -> empty cell, as pandas writes it)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def study_tables(st: Study) -> dict[str, list[dict]]:
    """The csv files of ``results/analyze/`` (file name -> rows)."""
    out = {"merges.csv": frame_rows(st.merges), "correlations.csv": frame_rows(st.corr)}
    if st.sweeps:
        sweep = [{**r, "chosen": "; ".join(r["chosen"]) if isinstance(r["chosen"], list) else r["chosen"]}
                 for s in st.sweeps.values() for r in s]
        out["budget_sweep.csv"] = frame_rows(sweep)
    out["regret.csv"] = frame_rows(st.regrets)
    out["measurements.csv"] = [{"quantity": k, **e.to_dict()} for k, e in st.measured.items()]
    return out


def figure_tables(st: Study) -> dict[str, list[dict]]:
    """The csv files beside the paper's figures in ``results/figures/``."""
    return {"correlations.csv": frame_rows(st.rows), "pairs.csv": frame_rows(st.pairs)}


def plot_tables(st: Study, bars: list[dict]) -> dict[str, list[dict]]:
    """The DVC plot csvs of ``results/plots/`` (file name -> rows)."""
    out = {"acc_vs_cka.csv": frame_rows(st.pairs[["i", "j", "kind", "S", "acc"]]) if len(st.pairs) else [],
           "abs_r.csv": frame_rows(pd.DataFrame(bars)[["metric", "abs_r", "kind", "source"]]) if bars else []}
    if st.regrets:
        out["regret.csv"] = frame_rows([{"setting": f"{r['protocol']}/{r['predictor']}", "mean_regret": r["mean_regret"],
                                         "protocol": r["protocol"], "predictor": r["predictor"]} for r in st.regrets])
    return out
