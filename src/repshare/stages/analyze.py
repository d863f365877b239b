"""DVC stage ``analyze``: the CKA-sharing study on the merges (science: :mod:`repshare.sharing.study`).

Reads ``results/cka`` and ``results/evaluate_merged`` (merges.json, correct.npy; verified against their
checksums) and the models' metrics; writes ``results/figures/`` (Figs. 3, 4 of the paper's setting), ``results/analyze/``
(section.json for the dashboard, comparison_rows.json, tables, figures), ``results/metrics.json``
and the DVC plot csvs. Provenance and durations go to ``results/metrics/analyze_run.json`` only.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repshare.comparison import Figure, write_rows, write_section
from repshare.sharing import figures as figs
from repshare.sharing import section as sec
from repshare.sharing.adapter import LABEL_FREE
from repshare.sharing.measure import Chance
from repshare.sharing.study import Settings, chosen_points, run_study
from repshare.utils.io import atomic_dir, read_json, write_csv, write_json
from repshare.workload import workload_bytes, workload_models

log = logging.getLogger("repshare")
STAGE = "analyze"
FIGURES = [("predictors_r", "Pearson r (95 % bootstrap CI) of CKA and agreement with merged accuracy, per adapter and "
                            "input protocol (same- and cross-stage pairs)."),
           ("budget_search", "Budget search: every label-free merge (accuracy vs bytes freed), the Pareto front, "
                             "and the merge each predictor chooses at each budget."),
           ("fig3_adapters", "Fig. 3 for every adapter and protocol: |r| of each predictor with merged accuracy "
                             "(agreement added); dashed = the paper's."),
           ("fig4_adapters", "Fig. 4 for every adapter and protocol: merged accuracy vs CKA."),
           ("fig3_abs_r", "Paper Fig. 3 on our models (resample adapter, per-model input): |r| of each metric with "
                          "merged accuracy, ours beside the paper's."),
           ("fig4_acc_vs_s", "Paper Fig. 4 on our models: merged accuracy vs CKA S, same-stage (left) and "
                             "cross-stage (right).")]


def settings(cfg: DictConfig) -> Settings:
    a = cfg.analysis
    return Settings(int(a.n_bootstrap), float(a.ci), int(cfg.seed),
                    {k: float(v) for k, v in OmegaConf.to_container(a.paper_r).items()},
                    tuple(float(f) for f in a.budget_fracs), None if a.accuracy_floor is None else float(a.accuracy_floor))


def read_inputs(results: Path) -> dict[str, Any]:
    """Every input, verified against the checksums its stage recorded; one line names a missing one."""
    import numpy as np

    from repshare.utils.artifacts import read_json_verified, verify_file

    merges = read_json_verified(results / "evaluate_merged" / "merges.json", "evaluate_merged")
    out = {"merges": merges, "cka_by_protocol": {p: read_json_verified(results / "cka" / p / "cka.json", "cka")
                                                 for p in merges.get("protocols", [])}}
    for name in ("correct", "baseline_correct"):
        path = verify_file(results / "evaluate_merged" / f"{name}.npy", "evaluate_merged")
        out[name] = np.load(path, allow_pickle=False)
    if out["correct"].shape[0] != len(merges.get("merges", [])):
        raise ValueError(f"{results / 'sharing' / 'correct.npy'} has {out['correct'].shape[0]} rows for "
                         f"{len(merges.get('merges', []))} merges: rerun the evaluate_merged stage")
    for name, stage in (("classifier", "train_classifier"), ("detector", "train_detector")):
        path = results / "metrics" / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"analyze needs {path} (written by the {stage} stage): run it first")
        out[name] = read_json(path)
    return out


def chance(inp: dict) -> Chance:
    """The chance guard's inputs: the unmerged classifier on the report images, the detector's mAP@.5."""
    base, m = inp["baseline_correct"], inp["merges"]
    return Chance(int(m["num_classes"]), int(base.sum()), int(base.size), inp["detector"].get("map_50"))


def run(cfg: DictConfig) -> dict[str, Any]:
    from repshare.utils.artifacts import verify_file
    from repshare.utils.runlog import RunLog

    results = Path(cfg.paths.results_dir)
    s = settings(cfg)
    inp = read_inputs(results)
    wl = workload_bytes(results, workload_models(cfg.workload))
    merges = inp["merges"]
    st = run_study(merges, inp["correct"], inp["cka_by_protocol"], chance(inp), s)
    ref_p = "per_model" if "per_model" in merges["protocols"] else merges["protocols"][0]
    metrics = sec.headline_metrics(st, {"classifier": inp["classifier"], "detector": inp["detector"]},
                                   merges["baselines"][ref_p])
    flops_per_s = float(cfg.multiexit.latency.flops_per_s)  # one FLOP rate for every method's modelled retraining
    rows = sec.comparison_rows(st, merges, float(sum(wl.values())), chosen_points(st.sweeps), flops_per_s)
    cka_doc = inp["cka_by_protocol"][ref_p]
    ctx = sec.Context(str(cka_doc.get("estimator")), int(cka_doc.get("n", 0)), int(merges["n_eval"]),
                      int(merges["n_variants"]), f"{merges['n_calibration']} images of the "
                      f"'{merges['calibration_split']}' split" if merges.get("calibration_split") else "no images",
                      flops_per_s, "every workload model's weight file", s.budget_fracs, s.accuracy_floor, s.paper_r)
    bars = figs.abs_r_rows(st.rows, s.paper_r)

    with atomic_dir(results / "figures", stage=STAGE) as fig_dir:
        figs.fig3_abs_r(st.rows, s.paper_r, fig_dir / "fig3_abs_r")
        figs.fig4_acc_vs_s(st.pairs, fig_dir / "fig4_acc_vs_s", st.hinge, st.rows)
        for name, table in sec.figure_tables(st).items():
            write_csv(fig_dir / name, table)
    with RunLog(cfg, STAGE, results / "metrics") as runlog, atomic_dir(results / STAGE, stage=STAGE) as tmp:
        for name in ("fig3_abs_r", "fig4_acc_vs_s"):
            for ext in ("png", "pdf"):
                shutil.copyfile(results / "figures" / f"{name}.{ext}", tmp / f"{name}.{ext}")
        figs.fig_adapter_r(st.corr, tmp / "predictors_r")
        figs.fig3_grid(st.corr, s.paper_r, tmp / "fig3_adapters")
        figs.fig4_grid(st.merges, tmp / "fig4_adapters", st.corr)
        mdf = st.merges.assign(acc=st.merges["acc_common"])  # the search's panels: the images every merge shares
        panels = {p: (mdf[(mdf["protocol"] == p) & mdf["adapter"].isin(LABEL_FREE)], st.sweeps[p], st.fronts[p])
                  for p in st.sweeps}
        if panels:
            figs.fig_budget_search(panels, st.classifier_bytes, tmp / "budget_search")
        figures = [Figure(f"{stem}.png", caption) for stem, caption in FIGURES if (tmp / f"{stem}.png").is_file()]
        for p in merges["protocols"]:
            shutil.copyfile(verify_file(results / "cka" / p / "cka_heatmap.png", "cka"), tmp / f"cka_heatmap_{p}.png")
            figures.append(Figure(f"cka_heatmap_{p}.png", f"Paper Fig. 2: stage-wise CKA, {p} input protocol."))
        for name, table in sec.study_tables(st).items():
            write_csv(tmp / name, table)
        write_json(tmp / "headline.json", st.head)
        write_rows(tmp / "comparison_rows.json", sec.METHOD, rows)
        write_section(tmp / "section.json", sec.section(st, ctx, figures))
        runlog.summary(**{k: v for k, v in metrics.items() if v is not None})
        runlog.log_table("pairs", st.pairs.to_dict("records"))
        runlog.log_table("merge_correlations", st.corr)
        runlog.log_table("regret", st.regrets)
        for f in figures[:3]:
            runlog.log_image(Path(f.path).stem, tmp / f.path)
    write_json(results / "metrics.json", metrics)
    for name, table in sec.plot_tables(st, bars).items():
        write_csv(results / "plots" / name, table)
    log.info("analyze: |r| same %s, cross %s; S' %s", metrics.get("cka.abs_r_same"), metrics.get("cka.abs_r_cross"),
             metrics.get("cka.s_prime"))
    return metrics
