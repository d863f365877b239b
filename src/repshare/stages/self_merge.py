"""DVC stage ``self_merge`` (MEEdge part 1b): neuron-level self-merge of every surviving branch,
and twin-merge of same-shape branch pairs as the paper's comparison (Fig. 7(2)).

The number of merged pairs follows the paper's rule: traverse from ``multiexit.merge.range[0]`` to
``range[1]`` of the candidate pairs and keep the most accurate, "accurate" measured on the select
images; val (report) accuracies are only reported. Writes merge.json (rows, the twin comparison and
its two measurements), the merged branches, their per-image correctness and the self-vs-twin figure.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from repshare.stage_scope import skip_reason, write_skipped
from repshare.multiexit.measure import Boot, paired_difference, saved_ratio
from repshare.multiexit.merge import traverse_fractions
from repshare.multiexit.store import MERGE_STAGE, Part1, open_split, read_zoo, save_branch, write_correct, zoo_branch_loader
from repshare.multiexit.study import CURVE_FRACTIONS, MergeRule, Sets, merge_survivors, twin_candidates, twin_comparison

log = logging.getLogger("repshare")


def run(cfg: DictConfig) -> dict:
    if (reason := skip_reason("self_merge", cfg)) is not None:  # repshare.stage_scope
        return write_skipped("self_merge", cfg, reason)
    from repshare.multiexit.zoo_figures import fig_self_vs_twin
    from repshare.utils.io import atomic_dir, write_csv, write_json
    from repshare.utils.runlog import RunLog

    t_start = time.perf_counter()
    mc = cfg.multiexit.merge
    results = Path(cfg.paths.results_dir)
    paths, metrics_dir = Part1(results), results / "metrics"
    rule = MergeRule(float(mc.range[0]), float(mc.range[1]), int(mc.max_evals), bool(mc.include_output))
    traverse_fractions(1, rule.lo, rule.hi)  # validates the range before anything is written
    boot = Boot(int(cfg.multiexit.n_bootstrap), int(cfg.seed))
    zoo = read_zoo(results)
    survivors = [p for p in zoo["branches"] if p["survived"]]
    twins = twin_candidates(zoo["branches"], zoo["specs"], int(mc.twin_pairs))
    exits = sorted({p["exit"] for p in survivors} | {zoo["specs"][i]["exit"] for ab in twins for i in ab})
    sets = Sets(open_split(results, "select", exits), open_split(results, "val", exits), exits) if exits else None
    load = zoo_branch_loader(results, zoo)

    merged_rows, merged, correct = merge_survivors(survivors, load, rule, sets)
    tw = twin_comparison(twins, load, rule, sets)
    measurements = {}
    if tw.rows:
        measurements["meedge.self_twin_saved_ratio"] = saved_ratio(
            tw.self_sweeps, tw.twin_sweeps, boot, "params saved by self-merging both branches of each same-shape pair / "
            "by twin-merging the pair, both at the rule's choice; bootstrap of that choice over the select images").to_dict()
        measurements["meedge.self_minus_twin_top1"] = paired_difference(
            tw.val_self, tw.val_twin, boot, "val top-1 of the self-merged minus the twin-merged branches, "
            "mean over both branches of every pair; paired bootstrap over val images").to_dict()
    doc = {"range": [rule.lo, rule.hi], "include_output": rule.include_output, "branches": merged_rows,
           "twin": tw.rows, "curves": tw.curves, "curve_fractions": list(CURVE_FRACTIONS),
           "measurements": measurements,
           "selection": "the rule's fraction and the twin pairs are chosen on the select images; accuracies on val"}
    done = [r for r in merged_rows if r["merged"]]
    with atomic_dir(paths.merge_dir, stage=MERGE_STAGE) as tmp, RunLog(cfg, "self_merge", metrics_dir) as runlog:
        for bid, m in merged.items():
            save_branch(m, tmp / "branches" / f"{bid}.merged.safetensors", bid)
        for split in ("select", "val"):
            write_correct(tmp / f"correct_{split}.npz", [f"{i}+merged" for i in merged],
                          np.stack([correct[i][split] for i in merged]) if merged else np.zeros((0, 0)))
        write_json(tmp / "merge.json", doc)
        if tw.curves:
            for f in fig_self_vs_twin(tw.curves, tmp / "self_vs_twin"):
                if f.suffix == ".png":
                    runlog.log_image("self_vs_twin", f)
        runlog.log_table("self_merge", [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in done])
        runlog.summary(n_merged=len(done), params_saved=sum(r["params_saved"] for r in done),
                       seconds=round(time.perf_counter() - t_start, 2))
    mean = (lambda k: float(np.mean([r[k] for r in done])) if done else None)
    write_json(metrics_dir / "self_merge.json", {
        "n_merged": len(done), "params_saved": sum(r["params_saved"] for r in done), "mean_acc": mean("accuracy"),
        "mean_acc_merged": mean("acc_merged"), "twin_pairs": len(tw.rows)})
    write_csv(results / "plots" / "multiexit_self_vs_twin.csv", [
        {"pair": c["pair"], "method": m, "kb_saved": round(kb, 3), "accuracy": acc}
        for c in tw.curves for m in ("self", "twin") for kb, acc in c[m]])
    log.info("self_merge: %d of %d survivors merged, %d twin pairs, %.1fs", len(merged), len(survivors),
             len(tw.rows), time.perf_counter() - t_start)
    return doc
