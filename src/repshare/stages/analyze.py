"""DVC stage ``analyze``: correlations, figures, the sharing-point search, the report section and comparison rows.

* The paper's setting (``results/sharing/pairs.json``: resample adapter, per-model input) gives
  the headline metrics, ``results/figures/`` (Figs. 3, 4) and the DVC metrics/plots, as before.
* Every (protocol, adapter) cell of ``results/sharing/merges.json``: correlation of accuracy with
  CKA, agreement and their product (label-free) and with #params/size/FLOPs, Fig. 4 per cell, the
  budget search with regret per predictor.
* ``results/cka_sharing/section.json`` (for the dashboard) and ``comparison_rows.json`` (shared schema).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from repshare.analysis.correlation import (
    collapse_threshold,
    correlation_table,
    find_merge_row,
    find_row,
    merge_correlations,
    merge_table,
    pair_table,
)
from repshare.analysis.figures import (abs_r_rows, fig3_abs_r, fig3_grid, fig4_acc_vs_s, fig4_grid, fig_adapter_r,
                                       fig_budget_search)
from repshare.analysis.run import _clean, headline_metrics, read_inputs
from repshare.comparison import ComparisonRow, Figure, PaperClaim, ReportSection, Table, write_rows, write_section
from repshare.sharing.adapter import LABEL_FREE
from repshare.sharing.search import PREDICTORS, budget_sweep, pareto_front, regret_table
from repshare.utils.io import atomic_dir, atomic_path, read_json, write_json
from repshare.utils.record import provenance
from repshare.utils.runlog import RunLog

log = logging.getLogger("repshare.analysis")
METHOD = "cka_sharing"
PRED_COLUMNS = {"cka": "S", "agreement": "agree", "params": "params", "size": "size", "flops": "flops"}


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _fmt_r(row: dict | None) -> str:
    if not row or row.get("r") is None or not math.isfinite(row["r"]):
        return "n/a"
    lo, hi = row.get("ci_low", math.nan), row.get("ci_high", math.nan)
    ci = f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{row['r']:.2f}{ci} (n={row['n']})"


def verdict(row: dict | None, paper_abs: float) -> str:
    """holds: r > 0 with its CI above 0 and |r| within 0.1 of the paper's (or above); partly: CI above 0
    but a lower r; does not: otherwise (CI including 0, a negative r, or r undefined)."""
    if not row or row.get("r") is None or not math.isfinite(row["r"]):
        return "does not"
    lo = row["ci_low"]
    if not (math.isfinite(lo) and lo > 0):
        return "does not"
    return "holds" if row["r"] >= paper_abs - 0.1 else "partly"


def load_merges(results: Path) -> tuple[dict, dict[str, dict]]:
    path = results / "sharing" / "merges.json"
    if not path.is_file():
        raise FileNotFoundError(f"analyze needs {path} (written by the evaluate_merged stage); run it first")
    merges = read_json(path)
    cka = {}
    for p in merges.get("protocols", []):
        cpath = results / "cka" / p / "cka.json"
        if not cpath.is_file():
            raise FileNotFoundError(f"analyze needs {cpath} (written by the cka stage for protocol {p!r}); run it first")
        cka[p] = read_json(cpath)
    return merges, cka


def workload_bytes(cfg: DictConfig, merges: dict) -> tuple[float, str]:
    """Bytes of every workload model's weights; falls back to classifier + detector from merges.json."""
    from repshare.workload import weight_bytes, workload_models

    try:
        models = workload_models(cfg.workload)
        files = [Path(cfg.paths.results_dir) / "models" / m.name / "model.safetensors" for m in models]
        if models and all(f.is_file() for f in files):
            return float(sum(weight_bytes(f) for f in files)), "workload weight files"
    except (KeyError, ValueError):
        pass
    return float(merges["classifier_bytes"] + merges["detector_bytes"]), "classifier + detector (in-memory bytes)"


def chosen_points(sweeps: dict[str, list[dict]]) -> dict[tuple, list[str]]:
    """(protocol, adapter, i, j) -> ["predictor@budget_frac", ...] for the search's untied choices."""
    out: dict[tuple, list[str]] = {}
    for p, sweep in sweeps.items():
        for r in sweep:
            if r["feasible"] and r["n_tied"] == 1:
                out.setdefault((p, r["adapter"], r["i"], r["j"]), []).append(f"{r['predictor']}@{r['budget_frac']:g}")
    return out


def comparison_rows(df: pd.DataFrame, merges: dict, total_bytes: float, name: str = "classifier",
                    chosen: dict[tuple, list[str]] | None = None) -> list[ComparisonRow]:
    base = merges["baselines"]
    chosen = chosen or {}
    rows = []
    for r in df.itertuples(index=False):
        b = base[r.protocol]
        base_acc = b["acc"] if r.n_full == b["n"] else b["acc_variants"]
        # Under the shared protocol the detector's backbone runs a second time, at the classifier's input.
        extra = r.adapter_flops - r.flops + (r.flops_shared if r.protocol == "shared" else 0.0)
        rows.append(ComparisonRow(
            method=METHOD,
            setting=f"pair ({r.i}, {r.j}), adapter {r.adapter}, {r.protocol.replace('_', '-')} input",
            models=[name], bytes_saved=int(r.bytes_saved), bytes_saved_pct=100.0 * float(r.bytes_saved) / total_bytes,
            accuracy={name: float(r.acc_full)}, accuracy_rel={name: float(r.acc_full) / base_acc if base_acc else 0.0},
            labels_used=bool(r.labels_used), retrain_seconds=float(r.fit_seconds), retrain_images=int(r.fit_images or 0),
            extra_flops_per_image=float(extra), metric={name: "top1"},
            extra={"protocol": r.protocol, "adapter": r.adapter, "i": int(r.i), "j": int(r.j), "kind": r.kind,
                   "cka": float(r.S), "agreement": float(r.agree), "n_images": int(r.n_full),
                   "adapter_bytes": int(r.adapter_bytes),
                   "chosen_by_search": chosen.get((r.protocol, r.adapter, int(r.i), int(r.j)), [])},
        ))
    return rows


def candidates(df: pd.DataFrame) -> list[dict]:
    """Label-free merges as search candidates (predictor columns renamed to the search's names)."""
    sub = df[df["adapter"].isin(LABEL_FREE) & ~df["labels_used"]]
    out = []
    for r in sub.to_dict("records"):
        out.append({"adapter": r["adapter"], "i": r["i"], "j": r["j"], "bytes_saved": r["bytes_saved"], "acc": r["acc"],
                    "cka": r["S"], "agreement": r["agree"], "params": r["params"], "size": r["size"], "flops": r["flops"]})
    return out


def headline(df: pd.DataFrame, corr: list[dict]) -> dict[str, Any]:
    """r(CKA, acc) for resample vs the best label-free adapter; best label-free recovery vs supervised."""
    out: dict[str, Any] = {}
    for p in df["protocol"].unique():
        cell = df[df["protocol"] == p]
        counts = cell.groupby("adapter").size()
        full = [a for a in counts.index if a in LABEL_FREE and counts[a] == counts.max()]
        means = cell[cell["adapter"].isin(full)].groupby("adapter")["acc"].mean()
        best = str(means.idxmax()) if len(means) else None
        out[p] = {"best_label_free_all_pairs": best, "mean_acc": {a: float(v) for a, v in means.items()}}
        for a in dict.fromkeys(["resample", best]):
            if a is None:
                continue
            for kind in ("same", "cross", "all"):
                out[p][f"{a}/r_S_{kind}"] = find_merge_row(corr, p, a, "S", kind)
                out[p][f"{a}/r_agree_{kind}"] = find_merge_row(corr, p, a, "agree", kind)
        sup = cell[cell["adapter"] == "supervised"]
        if len(sup):
            keys = set(zip(sup["i"], sup["j"]))
            sub = cell[[(i, j) in keys for i, j in zip(cell["i"], cell["j"])]]
            per = sub.groupby("adapter")["acc"].mean()
            lf = [a for a in per.index if a in LABEL_FREE]
            best_lf = max(lf, key=lambda a: per[a]) if lf else None
            res = per.get("resample", math.nan)
            gain = per["supervised"] - res
            out[p]["trained_subset"] = {
                "pairs": sorted([list(map(int, k)) for k in keys]),
                "mean_acc": {a: float(v) for a, v in per.items()},
                "best_label_free": best_lf,
                "recovered_frac": float((per[best_lf] - res) / gain) if best_lf and gain and math.isfinite(gain) else None,
            }
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Read cka/, sharing/ and the model metrics; write figures/, cka_sharing/, metrics.json, plots/."""
    a = cfg.analysis
    results = Path(cfg.paths.results_dir)
    inputs = read_inputs(results)
    merges, cka_by_protocol = load_merges(results)
    budgets_frac = [float(f) for f in a.budget_fracs]
    for f in budgets_frac:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"analysis.budget_fracs: budget {f!r} x classifier bytes is negative or larger than the classifier")
    floor = None if a.accuracy_floor is None else float(a.accuracy_floor)

    # ---- the paper's setting, exactly as before
    df = pair_table(inputs["cka"], inputs["pairs"])
    seed, nb, ci = int(cfg.seed), int(a.n_bootstrap), float(a.ci)
    rows = correlation_table(df, n_bootstrap=nb, ci=ci, seed=seed)
    thr = collapse_threshold(df["S"], df["acc"], float(a.collapse_drop))
    paper_r = {k: float(v) for k, v in OmegaConf.to_container(a.paper_r).items()}
    metrics = headline_metrics(rows, thr, df, inputs)
    bars = abs_r_rows(rows, paper_r)

    # ---- every protocol and adapter
    mdf = merge_table(merges, cka_by_protocol)
    corr = merge_correlations(mdf, n_bootstrap=nb, ci=ci, seed=seed)
    cls_bytes = float(merges["classifier_bytes"])
    budgets = [f * cls_bytes for f in budgets_frac]
    sweeps, regrets, fronts = {}, [], {}
    for p in merges["protocols"]:
        cands = candidates(mdf[mdf["protocol"] == p])
        if not cands:
            continue
        sweeps[p] = budget_sweep(cands, budgets, cls_bytes, tuple(PREDICTORS), floor)
        regrets += [{"protocol": p, **r} for r in regret_table(sweeps[p])]
        fronts[p] = pareto_front([(c["bytes_saved"], c["acc"]) for c in cands])
    head = headline(mdf, corr)
    total_bytes, bytes_source = workload_bytes(cfg, merges)
    crow = comparison_rows(mdf, merges, total_bytes, chosen=chosen_points(sweeps))

    with atomic_dir(results / "figures") as fig_dir:
        fig3_abs_r(rows, paper_r, fig_dir / "fig3_abs_r")
        fig4_acc_vs_s(df, fig_dir / "fig4_acc_vs_s", s_prime=thr["s_prime"], rows=rows)
        pd.DataFrame(rows).to_csv(fig_dir / "correlations.csv", index=False)
        df.to_csv(fig_dir / "pairs.csv", index=False)

    out = results / METHOD
    with atomic_dir(out) as tmp:
        figures: list[Figure] = []
        for name in ("fig3_abs_r", "fig4_acc_vs_s"):
            for ext in ("png", "pdf"):
                shutil.copyfile(results / "figures" / f"{name}.{ext}", tmp / f"{name}.{ext}")
        figures.append(Figure("fig3_abs_r.png", "Paper Fig. 3 on our models (resample adapter, per-model input): "
                                                "|r| of each metric with merged accuracy, ours beside the paper's."))
        figures.append(Figure("fig4_acc_vs_s.png", "Paper Fig. 4 on our models: merged accuracy vs CKA S, "
                                                   "same-stage (left) and cross-stage (right)."))
        for p in merges["protocols"]:
            heat = results / "cka" / p / "cka_heatmap.png"
            if heat.is_file():
                shutil.copyfile(heat, tmp / f"cka_heatmap_{p}.png")
                figures.append(Figure(f"cka_heatmap_{p}.png", f"Paper Fig. 2: stage-wise CKA, {p} input protocol."))
        fig_adapter_r(corr, tmp / "predictors_r")
        fig3_grid(corr, paper_r, tmp / "fig3_adapters")
        fig4_grid(mdf, tmp / "fig4_adapters", corr)
        panels = {p: (mdf[(mdf["protocol"] == p) & mdf["adapter"].isin(LABEL_FREE)], sweeps[p], fronts[p]) for p in sweeps}
        new = [Figure("predictors_r.png", "Pearson r (95 % bootstrap CI) of CKA and agreement with merged accuracy, "
                                          "per adapter and input protocol (same- and cross-stage pairs)."),
               Figure("fig3_adapters.png", "Fig. 3 for every adapter and protocol: |r| of each predictor with merged "
                                           "accuracy (agreement added); dashed = the paper's."),
               Figure("fig4_adapters.png", "Fig. 4 for every adapter and protocol: merged accuracy vs CKA.")]
        if panels:
            fig_budget_search(panels, cls_bytes, tmp / "budget_search")
            new.insert(1, Figure("budget_search.png", "Budget search: every label-free merge (accuracy vs bytes freed), "
                                                      "the Pareto front, and the merge each predictor chooses at each budget."))
        figures = new + figures
        mdf.to_csv(tmp / "merges.csv", index=False)
        pd.DataFrame(corr).to_csv(tmp / "correlations.csv", index=False)
        pd.DataFrame([r for s in sweeps.values() for r in s]).assign(
            chosen=lambda d: d["chosen"].map(lambda v: "; ".join(v) if isinstance(v, list) else v)
        ).to_csv(tmp / "budget_sweep.csv", index=False) if sweeps else None
        pd.DataFrame(regrets).to_csv(tmp / "regret.csv", index=False)
        write_json(tmp / "headline.json", head)
        write_rows(tmp / "comparison_rows.json", METHOD, crow)
        section = build_section(mdf, merges, corr, rows, paper_r, regrets, head, figures, bytes_source, floor, thr, budgets_frac)
        write_section(tmp / "section.json", section)
        with RunLog(cfg, "analyze", tmp) as runlog:
            runlog.summary(**{k: v for k, v in metrics.items() if v is not None})
            runlog.log_table("pairs", df.to_dict("records"))
            runlog.log_table("correlations", [dict(r) for r in rows])
            runlog.log_table("merge_correlations", [dict(r) for r in corr])
            runlog.log_table("regret", regrets)
            if runlog.wandb is not None:
                import wandb

                table = wandb.Table(dataframe=df[["i", "j", "kind", "S", "acc"]])
                runlog.wandb.log({"acc_vs_S": wandb.plot.scatter(table, "S", "acc", title="Merged accuracy vs CKA S")})
            for f in figures[:3]:
                runlog.log_image(Path(f.path).stem, tmp / f.path)

    # ---- DVC metrics and plots
    for p in head:
        for key in ("resample/r_S_same", "resample/r_S_cross"):
            row = head[p].get(key)
            metrics[f"{p}/{key}"] = _clean(row["r"]) if row else None
        best = head[p].get("best_label_free_all_pairs")
        if best:
            metrics[f"{p}/best_label_free"] = best
            for kind in ("same", "cross"):
                row = head[p].get(f"{best}/r_S_{kind}")
                metrics[f"{p}/best_label_free_r_S_{kind}"] = _clean(row["r"]) if row else None
        sub = head[p].get("trained_subset")
        if sub:
            metrics[f"{p}/recovered_frac_vs_supervised"] = _clean(sub["recovered_frac"])
    for r in regrets:
        metrics[f"{r['protocol']}/regret/{r['predictor']}"] = _clean(r["mean_regret"])
    write_json(results / "metrics.json", {**metrics, "provenance": {k: v for k, v in provenance(cfg, "analyze").items() if k != "config"}})
    _write_csv(df[["i", "j", "kind", "S", "acc"]], results / "plots" / "acc_vs_cka.csv")
    _write_csv(pd.DataFrame(bars)[["metric", "abs_r", "kind", "source"]], results / "plots" / "abs_r.csv")
    if regrets:
        _write_csv(pd.DataFrame(regrets).assign(setting=lambda d: d["protocol"] + "/" + d["predictor"])[
            ["setting", "mean_regret", "protocol", "predictor"]], results / "plots" / "regret.csv")
    log.info("analyze: r_same_S=%s r_cross_S=%s S'=%s", metrics["r_same_S"], metrics["r_cross_S"], metrics["collapse_threshold"])
    return metrics


def build_section(mdf: pd.DataFrame, merges: dict, corr: list[dict], rows: list[dict], paper_r: dict,
                  regrets: list[dict], head: dict, figures: list[Figure], bytes_source: str,
                  floor: float | None, thr: dict, budget_fracs: list[float]) -> ReportSection:
    cells = list(dict.fromkeys(zip(mdf["protocol"], mdf["adapter"])))

    def ours(metric: str, kind: str) -> str:
        return "; ".join(f"{ad}/{p}: {_fmt_r(find_merge_row(corr, p, ad, metric, kind))}" for p, ad in cells)

    ref_same, ref_cross = find_row(rows, "S", "same"), find_row(rows, "S", "cross")
    claims = [
        PaperClaim("Same-stage: merged accuracy correlates with CKA", f"|r| = {paper_r.get('same_stage_S', 0.94)}",
                   ours("S", "same"), verdict(ref_same, paper_r.get("same_stage_S", 0.94)),
                   "verdict on the paper's setting (resample adapter, per-model input); holds = |r| within 0.1 of the "
                   "paper's and CI excluding 0, partly = CI excluding 0, does not = CI including 0"),
        PaperClaim("Cross-stage: merged accuracy correlates with CKA", f"|r| = {paper_r.get('cross_stage_S', 0.99)}",
                   ours("S", "cross"), verdict(ref_cross, paper_r.get("cross_stage_S", 0.99)), "same rule"),
    ]
    for metric, key in (("params", "params"), ("size", "size"), ("flops", "flops")):
        r_m, r_s = find_row(rows, metric, "all"), find_row(rows, "S", "all")
        better = bool(r_m and r_s and math.isfinite(r_s["abs_r"]) and (not math.isfinite(r_m["abs_r"]) or r_s["abs_r"] > r_m["abs_r"]))
        claims.append(PaperClaim(f"CKA predicts merged accuracy better than {metric}", f"|r| of {metric} = {paper_r.get(key)}",
                                 f"all pairs: {ours(metric, 'all')}; CKA (resample/per-model): {_fmt_r(r_s)}",
                                 "holds" if better else "does not", "compared on all 64 pairs of the paper's setting"))
    corr_tab = Table("Pearson r with merged accuracy, per predictor, kind, adapter and protocol",
                     ["protocol", "adapter", "predictor", "kind", "r", "95% CI", "Spearman rho", "n"],
                     [{"protocol": r["protocol"], "adapter": r["adapter"], "predictor": r["metric"], "kind": r["kind"],
                       "r": _clean(r["r"]), "95% CI": _fmt_r(r).split(" (")[0].partition(" ")[2] or "n/a",
                       "Spearman rho": _clean(r["rho"]), "n": r["n"]} for r in corr],
                     "S = CKA of the pair under the protocol; agree = agreement with the unmerged classifier on "
                     "unlabelled val images; S_x_agree = their product. Bootstrap percentile CIs.")
    summ = []
    for (p, ad), sub in mdf.groupby(["protocol", "adapter"], sort=False):
        summ.append({"protocol": p, "adapter": ad, "pairs": int(len(sub)),
                     "mean acc (same)": _clean(float(sub[sub.kind == "same"]["acc"].mean())),
                     "mean acc (cross)": _clean(float(sub[sub.kind == "cross"]["acc"].mean())),
                     "best acc": float(sub["acc"].max()), "mean agreement": float(sub["agree"].mean()),
                     "labels used": bool(sub["labels_used"].any()),
                     "fit seconds (sum)": float(sub["fit_seconds"].sum()), "val images": int(sub["n"].iloc[0])})
    summ_tab = Table("Merged accuracy per adapter and protocol", list(summ[0]), summ,
                     f"Unmerged classifier: {merges['baselines']}.")
    reg_tab = Table("Sharing-point search: regret per predictor (oracle accuracy - chosen accuracy)",
                    ["protocol", "predictor", "budgets", "mean_regret", "max_regret", "mean_chosen_acc", "mean_oracle_acc"],
                    [{k: _clean(v) for k, v in r.items()} for r in regrets],
                    "Candidates: label-free merges only; budgets = " + ", ".join(f"{f:g}" for f in budget_fracs) +
                    " x the classifier's bytes; ties scored as a random pick among the tied merges; floor on "
                    f"agreement: {floor}.")
    head_rows = []
    for p, h in head.items():
        best = h.get("best_label_free_all_pairs")
        for kind in ("same", "cross"):
            head_rows.append({"protocol": p, "kind": kind, "resample r(CKA, acc)": _fmt_r(h.get(f"resample/r_S_{kind}")),
                              "best label-free adapter": best, "its r(CKA, acc)": _fmt_r(h.get(f"{best}/r_S_{kind}")),
                              "its r(agreement, acc)": _fmt_r(h.get(f"{best}/r_agree_{kind}"))})
    head_tab = Table("Headline: CKA as a predictor with the paper's adapter vs the best label-free adapter",
                     ["protocol", "kind", "resample r(CKA, acc)", "best label-free adapter", "its r(CKA, acc)",
                      "its r(agreement, acc)"], head_rows,
                     "Best label-free adapter = highest mean accuracy over all 64 pairs of the protocol.")
    rec_rows = []
    for p, h in head.items():
        t = h.get("trained_subset")
        if t:
            rec_rows.append({"protocol": p, "pairs": str(t["pairs"]),
                             **{f"mean acc {k}": v for k, v in t["mean_acc"].items()},
                             "best label-free": t["best_label_free"], "recovered fraction": _clean(t["recovered_frac"])})
    tables = [head_tab, summ_tab, corr_tab, reg_tab]
    if rec_rows:
        cols = list(dict.fromkeys(k for r in rec_rows for k in r))
        tables.append(Table("Label-free recovery vs the supervised upper bound (trained-adapter pairs)", cols,
                            [{c: r.get(c) for c in cols} for r in rec_rows],
                            "recovered fraction = (best label-free - resample) / (supervised - resample), mean accuracy "
                            "over the pairs where the trained adapters ran."))
    n_pairs = int(mdf.groupby(["protocol", "adapter"]).size().max())
    summary = (f"Representation sharing between an EfficientDet-D0 backbone and an EfficientNet-B0 classifier: "
               f"{len(cells)} (protocol, adapter) settings, up to {n_pairs} (i, j) pairs each. The paper's setting "
               f"(resample adapter, per-model input) gives r(CKA, acc) = {_fmt_r(ref_same)} same-stage and "
               f"{_fmt_r(ref_cross)} cross-stage (paper: 0.94 / 0.99); collapse threshold S' = {thr['s_prime']:.3g}. "
               "Fitted adapters (moments, lstsq: no labels) and the label-free agreement predictor are compared "
               "with the supervised upper bound; the search picks a sharing point under a memory budget without labels.")
    notes = [
        "Adapter bytes are subtracted from the bytes freed; the fixed adapter's channel index adds none.",
        "Agreement is measured on the val images without their labels; the budget search reads only bytes, CKA, "
        "agreement, #params, size and FLOPs (labels only score the choice and the oracle).",
        "Under the shared protocol the detector's backbone must run a second time at the classifier's input: its "
        "FLOPs are added to extra_flops_per_image of those rows.",
        f"bytes_saved_pct is relative to {bytes_source}.",
        "Timings were measured on a shared 2-core CPU and are pessimistic.",
    ]
    return ReportSection(method=METHOD, title="Representation sharing guided by CKA (Cao et al., MobiCom'24) and beyond",
                         summary=summary, claims=claims, tables=tables, figures=figures, notes=notes)
