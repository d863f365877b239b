"""Gemel's study on one workload. Plain values in (models, splits, settings), results out; no config
object and no paths.

1. **Search** (:func:`run_search`): heaviest-first trials; each ties its layers, retrains every model
   holding a merged layer, and is accepted by the rule of :mod:`repshare.gemel.decision` on the
   ``select`` images (the unmerged outcomes there are computed once and reused).
2. **Control** (:func:`run_control`): the same joint retraining *without* merging -- the unmerged
   models, the same models per trial, the same loss weights, steps, batches and augmentations
   (same seeds) as every accepted trial, in order -- so the accuracy the retraining adds is not
   credited to merging.
3. **Report** (:func:`report_outcomes`): unmerged, merged and control models on the report split.
4. **Simulation** (:func:`frames`): frames processed under memory budgets, unmerged vs every
   accepted iteration, and the two decision-sensitivity workloads (fragile decisions flipped).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from repshare.data.shards import Split
from repshare.gemel.decision import Decision, decide
from repshare.gemel.layers import Group, LayerInstance
from repshare.gemel.merge import shared_bytes, tie_layers
from repshare.gemel.models import Member
from repshare.gemel.outcomes import Outcome, evaluate_outcome, value
from repshare.gemel.retrain import RetrainSettings, loss_weights, retrain
from repshare.gemel.search import SearchResult, search
from repshare.gemel.simulate import SimModel, SimSettings, simulate
from repshare.gemel.splits import head
from repshare.gemel.timing import CostModel, tied_tensor_map
from repshare.stats import Estimate

log = logging.getLogger("repshare")
# Loading bandwidths (GB/s) the frames gain is also shown at: from a slow flash read to a fast PCIe copy.
LOAD_SWEEP_GB_PER_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class DecisionSettings:
    n_classification: int | None = 2000  # select images per classifier decision (None: the whole split)
    n_detection: int | None = 500  # per detector decision (a detector image costs ~7x a classifier's)
    n_weights: int = 200  # select images for the post-tying accuracy behind the loss weights
    alpha: float = 0.05  # accept only if the one-sided 1 - alpha lower bound of the margin is >= 0
    n_boot: int = 1000


@dataclass(frozen=True)
class Settings:
    """Config ``gemel`` as plain values."""

    target: float
    max_iterations: int
    init: str
    alpha: float  # loss-weight exponent (reference)
    max_weight: float
    eval_batch_size: int
    retrain: RetrainSettings
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    control: bool = True
    seed: int = 0


@dataclass
class Trial:
    """What one iteration of the search did (``Iteration.info``)."""

    models: list[str]
    before: dict[str, float]  # accuracy right after tying, on the loss-weight images
    weights: dict[str, float]
    decision: Decision
    seed: int  # the retraining's seed (the control reuses it)
    retrain_images: int
    retrain_seconds: float  # duration: for the run record only


@dataclass
class SearchOutcome:
    result: SearchResult
    final: dict[str, torch.nn.Module]  # after every accepted merge (tied)
    unmerged_select: dict[str, Outcome]  # each model's decision images, before any merge
    bytes_total: int  # parameter bytes counted per model, final workload
    bytes_distinct: int  # parameter bytes of its distinct tensors

    @property
    def trials(self) -> list[Trial]:
        return [it.info["trial"] for it in self.result.iterations]


def touched(instances: Sequence[LayerInstance]) -> list[str]:
    return list(dict.fromkeys(n for i in instances for n in i.members))


def decision_images(select: Split, members: dict[str, Member], d: DecisionSettings) -> dict[str, Split]:
    """Each model's decision images: the first ``n_classification`` / ``n_detection`` of the select split."""
    return {n: head(select, d.n_detection if m.spec.task == "detection" else d.n_classification)
            for n, m in members.items()}


def run_search(models: dict[str, torch.nn.Module], members: dict[str, Member], groups: list[Group], train: Split,
               select: Split, s: Settings, device) -> SearchOutcome:
    """The incremental search (module docstring, step 1). ``models`` are left untouched."""
    d = s.decision
    images = decision_images(select, members, d)
    weight_images = head(select, d.n_weights)

    def outcome(name: str, model, split: Split) -> Outcome:
        return evaluate_outcome(model, members[name], split, s.eval_batch_size, device)

    unmerged = {n: outcome(n, m, images[n]) for n, m in models.items()}
    # The loss weights' targets: the unmerged accuracy on the loss-weight images, which are a prefix of the
    # decision images whenever there are no more of them (then read off the cached outcome, not re-evaluated).
    n_w = len(weight_images)
    base_w = {n: value(outcome(n, m, weight_images)) if n_w > unmerged[n].n else
              float(unmerged[n].metric(np.r_[np.ones(n_w), np.zeros(unmerged[n].n - n_w)][None])[0])
              for n, m in models.items()}
    log.info("gemel: unmerged on the select split %s", {n: round(value(o), 4) for n, o in unmerged.items()})
    state = {"models": models, "trials": 0}

    def try_merge(merged: list[LayerInstance], trial: list[LayerInstance]) -> tuple[bool, dict]:
        k = state["trials"]
        state["trials"] += 1
        cand = copy.deepcopy(state["models"])  # one deepcopy: existing ties survive
        tie_layers(cand, trial, s.init)
        names = touched(merged + trial)
        before = {n: value(outcome(n, cand[n], weight_images)) for n in names}
        weights = loss_weights(before, {n: s.target * base_w[n] for n in names}, s.alpha, s.max_weight)
        seed = s.seed + k + 1
        seconds = retrain({n: cand[n] for n in names}, members, train, weights, s.retrain, seed)
        after = {n: outcome(n, cand[n], images[n]) for n in names}
        dec = decide(after, {n: unmerged[n] for n in names}, s.target, d.alpha, d.n_boot, s.seed + 1000 * (k + 1))
        if dec.accepted:
            state["models"] = cand
        log.info("gemel trial %d (%d layers, models %s): %s (%s); margin lower bounds %s", k, len(trial), names,
                 "accepted" if dec.accepted else "rejected", "robust" if dec.robust else "fragile",
                 {m.model: round(m.lower, 4) for m in dec.models})
        info = Trial(names, before, weights, dec, seed, s.retrain.steps * s.retrain.batch_size * len(names), seconds)
        return dec.accepted, {"trial": info}

    result = search(groups, try_merge, s.max_iterations)
    final = state["models"]
    total_b, distinct_b = shared_bytes(final)
    return SearchOutcome(result, final, unmerged, total_b, distinct_b)


def run_control(models: dict[str, torch.nn.Module], members: dict[str, Member], train: Split, found: SearchOutcome,
                s: Settings) -> tuple[dict[str, torch.nn.Module], float]:
    """The unmerged models retrained exactly as every accepted trial retrained its candidates, in order, with no
    layer tied (module docstring, step 2). Returns (control models, seconds)."""
    control, seconds = copy.deepcopy(models), 0.0
    for it in found.result.iterations:
        if it.accepted:
            t = it.info["trial"]
            seconds += retrain({n: control[n] for n in t.models}, members, train, t.weights, s.retrain, t.seed)
    return control, seconds


def report_outcomes(workloads: dict[str, dict[str, torch.nn.Module]], members: dict[str, Member], report: Split,
                    batch_size: int, device) -> dict[str, dict[str, Outcome]]:
    """Every workload's models on the report split; a model object already evaluated (untouched by a
    merge or a retraining) is not evaluated twice."""
    seen: dict[int, Outcome] = {}
    out: dict[str, dict[str, Outcome]] = {}
    for setting, models in workloads.items():
        out[setting] = {}
        for name, m in models.items():
            if id(m) not in seen:
                seen[id(m)] = evaluate_outcome(m, members[name], report, batch_size, device)
            out[setting][name] = seen[id(m)]
    return out


def sensitivity_sets(result: SearchResult, instances: Sequence[LayerInstance]) -> dict[str, list[LayerInstance]]:
    """The merged layers as decided, and with every fragile decision flipped (later trials held as they
    were): ``robust`` drops the layers of fragile accepts, ``optimistic`` adds those of fragile rejects."""
    by_index = {i.index: i for i in instances}
    decided = list(result.merged)
    merged_ids = {i.index for i in decided}
    fragile = [it for it in result.iterations if not it.info["trial"].decision.robust]
    dropped = {k for it in fragile if it.accepted for k in it.instances}
    added = dict.fromkeys(k for it in fragile if not it.accepted for k in it.instances if k not in merged_ids)
    return {"decided": decided, "robust": [i for i in decided if i.index not in dropped],
            "optimistic": decided + [by_index[k] for k in added]}


def saved_bytes(instances: Sequence[LayerInstance]) -> int:
    """Bytes no longer stored once ``instances`` are tied (each instance once)."""
    return sum({i.index: i.saving for i in instances}.values())


@dataclass(frozen=True)
class FrameResult:
    setting: str
    budget_bytes: int
    processed: int
    frames: int
    processed_per_model: dict[str, int]
    frames_per_model: int
    loads: int
    load_ms: float


def frames(unmerged_map: dict[str, dict[str, int]], settings: dict[str, Sequence[LayerInstance]],
           load_ms: dict[str, float], run_ms: dict[str, float], budget_list: Sequence[int],
           sim: SimSettings) -> list[FrameResult]:
    """One simulation per (budget, setting); ``settings``: name -> merged layers ("unmerged": none)."""
    out = []
    for budget in budget_list:
        for name, instances in settings.items():
            tmap = tied_tensor_map(unmerged_map, instances)
            r = simulate([SimModel(n, tmap[n], load_ms[n], run_ms[n]) for n in tmap], budget, sim.fps, sim.sla_ms,
                         sim.duration_s, sim.batch_size)
            out.append(FrameResult(name, int(budget), r.processed, r.frames_total, dict(r.processed_per_model),
                                   r.frames_total // len(tmap), r.loads, r.load_ms))
    return out


@dataclass(frozen=True)
class Splits:
    train: Split  # joint retraining
    select: Split  # decisions
    report: Split  # every reported number
    select_name: str = "select"  # what the decision images are, in words


@dataclass
class Study:
    """Everything the section, the files and the run record need."""

    found: SearchOutcome
    instances: list[LayerInstance]
    workload_bytes: int
    sizes: dict[str, int]  # weight bytes per model (state dict)
    report: dict[str, dict[str, Outcome]]  # setting (unmerged | gemel | control) -> model -> outcome
    reps: dict[str, dict[str, np.ndarray]]  # the same, bootstrap replicates on shared resamples
    control_ran: bool
    control_seconds: float
    sets: dict[str, list[LayerInstance]]  # decided | robust | optimistic
    sweep: list[FrameResult]  # unmerged and every accepted iteration, every budget
    at_claim: dict[str, FrameResult]  # unmerged | decided | robust | optimistic at the claim budget
    load_ms: dict[str, float]
    run_ms: dict[str, float]
    flops: dict[str, int]
    timing_spread: dict[str, dict[str, tuple[float, float, float]]] | None  # measured: min, median, max
    chance: list[str]  # models at chance on the report split
    measurements: dict = field(default_factory=dict)  # quantity -> Estimate
    bandwidth: list[dict] = field(default_factory=list)  # frames gain vs the cost model's loading bandwidth


def run(models: dict[str, torch.nn.Module], members: dict[str, Member], instances: list[LayerInstance],
        groups: list[Group], data: Splits, s: Settings, sim: SimSettings, budget_list: list[int],
        claim_budget: int, cost: CostModel | None, measured: dict[str, tuple[list[float], list[float]]] | None,
        device) -> Study:
    """The whole study (module docstring). ``cost``: the cost model, or None with ``measured`` timings."""
    from repshare.gemel import measures as M
    from repshare.gemel.timing import frame_flops, medians, modelled_times, tensor_map

    unmerged_map = tensor_map(models)
    sizes = {n: sum(t.values()) for n, t in unmerged_map.items()}
    workload_bytes = sum(sizes.values())
    original = {n: m for n, m in models.items()}  # the search deep-copies; these stay unmerged
    found = run_search(models, members, groups, data.train, data.select, s, device)
    accepted = [it for it in found.result.iterations if it.accepted]
    control_ran = s.control and bool(accepted)
    control, control_s = run_control(original, members, data.train, found, s) if control_ran else (original, 0.0)
    workloads = {"unmerged": original, "gemel": found.final, "control": control}
    report = report_outcomes(workloads, members, data.report, s.eval_batch_size, device)
    cache: dict[int, np.ndarray] = {}  # one set of replicates per distinct outcome (untouched models repeat)
    reps = {k: {n: cache.setdefault(id(o), M.replicates(o, s.decision.n_boot, s.seed)) if id(o) not in cache
                else cache[id(o)] for n, o in v.items()} for k, v in report.items()}

    flops = {n: frame_flops(m, members[n], data.report.images.shape[1]) for n, m in original.items()}
    spread = None
    if cost is not None:
        load_ms, run_ms = modelled_times(sizes, flops, cost)
    else:
        load_ms, run_ms = medians(measured)
        spread = {n: {"load_ms": (min(a), load_ms[n], max(a)), "run_ms": (min(b), run_ms[n], max(b))}
                  for n, (a, b) in measured.items()}
    sets = sensitivity_sets(found.result, instances)
    merged_upto = {f"iteration {it.index}": [i for i in found.result.merged if i.index in
                                             {k for a in accepted[: j + 1] for k in a.instances}]
                   for j, it in enumerate(accepted)}
    sweep = frames(unmerged_map, {"unmerged": [], **merged_upto}, load_ms, run_ms, budget_list, sim)
    at_claim = {r.setting: r for r in frames(unmerged_map, {"unmerged": [], **sets}, load_ms, run_ms,
                                             [claim_budget], sim)}
    if measured is not None:  # the spread of the measured times: every repeat's times simulated on their own
        for k in range(min(len(v[0]) for v in measured.values())):
            lk, rk = {n: v[0][k] for n, v in measured.items()}, {n: v[1][k] for n, v in measured.items()}
            for r in frames(unmerged_map, {"unmerged": [], "decided": sets["decided"]}, lk, rk, [claim_budget], sim):
                at_claim[f"{r.setting} (repeat {k})"] = r

    study = Study(found, instances, workload_bytes, sizes, report, reps, control_ran, control_s, sets, sweep,
                  at_claim, load_ms, run_ms, flops, spread, M.at_chance(report["unmerged"], members, reps["unmerged"]))
    if cost is not None:  # how the frames gain depends on the one constant that sets the swapping cost
        for gbps in LOAD_SWEEP_GB_PER_S:
            lm, rm = modelled_times(sizes, flops, CostModel(gbps, cost.tflops, cost.run_overhead_ms))
            u, m = frames(unmerged_map, {"unmerged": [], "decided": sets["decided"]}, lm, rm, [claim_budget], sim)
            study.bandwidth.append({"load GB/s": gbps, "unmerged processed (%)": round(100 * u.processed / u.frames, 2),
                                    "Gemel processed (%)": round(100 * m.processed / m.frames, 2),
                                    "more frames (%)": round(100 * (m.processed / u.processed - 1), 2)
                                    if u.processed else None})
    study.measurements = measure(study, s)
    return study


def frames_ceiling(est: Estimate, unmerged: FrameResult) -> Estimate:
    """A frames gain is not interpretable when the unmerged workload already processes every frame (a
    ceiling, as a model at chance is a floor): no setup can process more, so the claim is not tested."""
    if unmerged.processed < unmerged.frames:
        return est
    return est.with_note("the unmerged workload already processes every frame at the claim's memory level, so "
                         "no setup can process more (raise gemel.sim fps or lower the load bandwidth); "
                         + est.note, interpretable=False)


def query_gain_at_ceiling(gain: Estimate, frames: Estimate) -> Estimate:
    """Query accuracy = accuracy x fraction of frames processed, and Gemel's gain comes from processing more
    frames. Where the frames gain is not interpretable (no setup can process more: :func:`frames_ceiling`),
    the query-accuracy gain can only be the accuracy noise of one set of models (it flipped between
    machines), so it is not interpretable either."""
    if frames.interpretable:
        return gain
    return gain.with_note("frames processed are at their ceiling, so the gain can only be accuracy noise, not "
                          "Gemel's mechanism (more frames); " + gain.note, interpretable=False)


def processed_fraction(r: FrameResult) -> dict[str, float]:
    return {n: k / r.frames_per_model for n, k in r.processed_per_model.items()}


def measure(st: Study, s: Settings) -> dict:
    """The claim quantities (:mod:`repshare.gemel.claims`) as Estimates; all marked not interpretable
    when a model of the workload is at chance on the report split."""
    from repshare.gemel import measures as M

    trials = len(st.found.result.iterations)
    pct = {k: 100.0 * saved_bytes(v) / st.workload_bytes for k, v in st.sets.items()}
    out = {"gemel.memory_saved_pct": M.decision_interval(
        pct["decided"], pct["robust"], pct["optimistic"], trials,
        "exact given the decisions; interval: fragile decisions flipped")}
    base = st.at_claim["unmerged"].processed

    def more(setting: str) -> float:
        return 100.0 * (st.at_claim[setting].processed / base - 1.0) if base else math.nan

    repeats = [more(k) for k in st.at_claim if k.startswith("decided (repeat")]
    lo = min([more("robust"), more("optimistic")] + repeats)
    hi = max([more("robust"), more("optimistic")] + repeats)
    out["gemel.more_frames_pct"] = M.decision_interval(
        more("decided"), lo, hi, trials, "simulated" + (" with measured times: interval also over their repeats"
                                                         if repeats else " with the cost model"))
    out["gemel.more_frames_pct"] = frames_ceiling(out["gemel.more_frames_pct"], st.at_claim["unmerged"])
    n = st.report["unmerged"][next(iter(st.report["unmerged"]))].n
    frac_m, frac_u = processed_fraction(st.at_claim["decided"]), processed_fraction(st.at_claim["unmerged"])
    nothing_merged = not any(it.accepted for it in st.found.result.iterations)
    if st.control_ran or nothing_merged:  # nothing merged: no retraining either, so the control is the original
        out["gemel.query_accuracy_gain_pct"] = M.gain_pct(
            st.report["gemel"], frac_m, st.report["control"], frac_u, st.reps["gemel"], st.reps["control"], n,
            "merged vs control (same retraining, no merging)" if st.control_ran else
            "nothing was merged, so nothing was retrained: the merged workload and the control are the original")
        out["gemel.query_accuracy_gain_pct"] = query_gain_at_ceiling(out["gemel.query_accuracy_gain_pct"],
                                                                     out["gemel.more_frames_pct"])
    out["gemel.query_accuracy_gain_vs_unmerged_pct"] = M.gain_pct(
        st.report["gemel"], frac_m, st.report["unmerged"], frac_u, st.reps["gemel"], st.reps["unmerged"], n,
        "merged vs the original models (the retraining's gain included)")
    if st.chance:
        note = "model at chance on the report split: " + "; ".join(st.chance)
        out = {k: e.with_note(f"{note} ({e.note})", interpretable=False) for k, e in out.items()}
    return out
