"""The concurrency paper's claims (Hadidi, Cao, Ryoo, Kim, IEEE EDGE 2023; camera-ready pages 245-254),
for the one verdict rule (:mod:`repshare.claims`).

``QUANTITIES``: every quantity :mod:`repshare.concurrency.measure` measures that a claim may name.
``CLAIMS``: the paper's claims, each with its number and where it is in the paper.

Intervals are percentile bootstraps over the sampled graphs (every graph index resampled together
across generators, sizes and unit counts; the generators' graphs are independent draws, so pairing
them by index leaves the spread of a difference of means unchanged) or Student-t over architectures.
"Worst over settings" statistics (the largest DP-minus-other difference over the (vertices, n)
settings) read the paper's "consistently" literally: the claim must hold in every setting.
The check of eta on the paper's hand-built Fig. 5 chains holds by construction: it is a
:class:`repshare.claims.SanityCheck` (``measure.sanity_checks``), never a claim.
"""

from __future__ import annotations

from repshare.claims import Claim

QUANTITIES: dict[str, str] = {
    "concurrency.cs_dp_minus_best_other": "DP's mean CS minus the lowest mean CS of the other generators (ER, BA, WS "
                                          "at RandWire's constants), worst (largest) over the (vertices, n) settings",
    "concurrency.cs_dp_minus_best_matched": "DP's mean CS minus the lowest mean CS of ER/BA/WS with constants matched "
                                            "to DP's mean degree, worst (largest) over the (vertices, n) settings",
    "concurrency.dp_speedup_min": "mean simulated speedup of DP graphs on n units over one unit (best-CS partition, "
                                  "deterministic cost model), lowest over the (vertices, n) settings",
    "concurrency.dp_speedup_vs_fb": "inference time of FB (RandWire with staging) over DP's, both distributed "
                                    "(not measured: no FB generator, no devices)",
    "concurrency.proxy_top1_dp_minus_others": "proxy top-1 (points) of DP architectures minus the mean of the other "
                                              "generators' architectures of the same index",
    "concurrency.table4_greedy_minus_prob_min": "mean parameters (thousands) with greedy minus probabilistic staging "
                                                "of the same graphs, smallest over generators",
    "concurrency.table4_sd_greedy_minus_prob_max": "sd of parameters (thousands) with greedy minus probabilistic "
                                                   "staging, largest over generators",
    "concurrency.table4_dp_minus_smallest_other": "DP's mean parameters (thousands, probabilistic staging) minus the "
                                                  "smallest mean of the other generators",
    "concurrency.lambda_er_ba_minus_dp_min": "the smaller of ER's and BA's mean communication Lambda (MB) minus DP's, "
                                             "smallest over the (vertices, n) settings",
    "concurrency.rho_cs_latency": "Spearman rho of CS with simulated latency over the best partitions of every "
                                  "sampled graph (all generators, sizes and n)",
    "concurrency.chain_dp_er_minus_ba_ws": "longest path / vertices: the larger of DP's and ER's mean minus the smaller "
                                           "of BA's and WS's, largest over sizes",
    "concurrency.chain_dp_minus_workload": "longest path / vertices: DP's mean minus the workload's most parallel "
                                           "classifier's, largest over sizes",
    "concurrency.workload_chain_fraction": "longest path / vertices of the workload's classifiers and the traced "
                                           "timm architectures (1 = one chain), smallest over them",
}

_PAPER = "concurrency"
_CS_TOL = ("a direction: DP must score lower in every setting; the paper gives no margin, and CS is a ratio scale "
           "where any consistent gap is the claim")

CLAIMS: tuple[Claim, ...] = (
    Claim(
        key="concurrency.dp_lowest_cs", paper=_PAPER,
        statement="The distance-based generator (DP) consistently gives the most concurrent architectures: the lowest "
                  "concurrency score in every setting.",
        paper_value="DP lowest CS in every setting (1000 graphs per generator; 40 and 80 vertices; n = 4, 6, 8, 10)",
        where="§IV-B 'Concurrency Study' and Fig. 9, p. 251; Abstract ('consistently deliver superior architectures')",
        quantity="concurrency.cs_dp_minus_best_other",
        subset="the generators at the configured constants (ER/BA/WS: RandWire's), every configured (vertices, n); "
               "best epsilon per graph",
        low=None, high=0.0, tolerance=0.0, why_tolerance=_CS_TOL, primary=True, unit="CS"),
    Claim(
        key="concurrency.dp_lowest_cs_degree_matched", paper=_PAPER,
        statement="DP's advantage comes from its distance-based structure, not from sparsity: DP scores lower than "
                  "ER, BA and WS graphs with the same mean degree.",
        paper_value="DP lowest CS (a direction; the paper has no density control)",
        where="§III-A(4), pp. 247-248 ('naturally creates multiple locally strongly connected graphs', Fig. 3d); "
              "control asked by the review (issue 23 item 4)",
        quantity="concurrency.cs_dp_minus_best_matched",
        subset="ER/BA/WS with constants matched to DP's expected mean degree per vertex count, every configured "
               "(vertices, n); best epsilon per graph",
        low=None, high=0.0, tolerance=0.0, why_tolerance=_CS_TOL, primary=True, unit="CS"),
    Claim(
        key="concurrency.dp_reduces_latency", paper=_PAPER,
        statement="Concurrent (DP) architectures reduce inference latency when one inference is distributed over n "
                  "units.",
        paper_value="reduced latency (Abstract); 6-7x (§I)",
        where="Abstract; §I p. 246; §IV-B and Fig. 8, p. 251",
        quantity="concurrency.dp_speedup_min",
        subset="DP graphs, every configured (vertices, n), best-CS partition, latency from the deterministic cost "
               "model (per-unit FLOP rate, link bandwidth, per-message latency); baseline: the same graph on one unit",
        low=1.0, high=None, tolerance=0.0,
        why_tolerance="a direction: any speedup above 1 is a reduction; the magnitude is the separate 6-7x claim",
        primary=True, unit="x"),
    Claim(
        key="concurrency.dp_speedup_6_7x", paper=_PAPER,
        statement="DP architectures run 6-7x faster than FB (RandWire with its staging blocks), both distributed.",
        paper_value="6-7x",
        where="§I p. 246; §IV-B and Fig. 8 (normalised to FB), p. 251",
        quantity="concurrency.dp_speedup_vs_fb",
        subset="1000 DP vs FB architectures, 40 vertices, n = 4-10 units on AWS t2.micro instances: not reproduced "
               "here (no FB generator, no devices; our latency is a cost model)",
        low=6.0, high=7.0, tolerance=1.0,
        why_tolerance="one unit of speedup: the paper reads the range off a figure of measured device times",
        primary=True, unit="x"),
    Claim(
        key="concurrency.accuracy_comparable", paper=_PAPER,
        statement="The generated concurrent architectures keep accuracy comparable to the other generators' (DP vs "
                  "ER/BA/WS).",
        paper_value="DP minus the mean of ER/BA/WS: +0.37 points (Cifar-10, Table V) to +1.58 (Flower-102, Table VI)",
        where="§IV-B 'Accuracy Study', Tables V and VI, p. 251",
        quantity="concurrency.proxy_top1_dp_minus_others",
        subset="the accuracy proxy: small generated architectures trained briefly on the embedded images at 32 px "
               "(the paper: 100 Cifar-10 / 300 Flower-102 epochs)",
        low=0.37, high=1.58, tolerance=2.0,
        why_tolerance="'comparable' spans the spread between the paper's own generators (ER-WS: 1.4 points on "
                      "Cifar-10, 3.4 on Flower-102); 2 points either side of its range",
        primary=True, unit="points"),
    Claim(
        key="concurrency.table4_greedy_larger", paper=_PAPER,
        statement="Greedy staging creates larger architectures than probabilistic staging, for every generator.",
        paper_value="greedy - probabilistic: ER +2.60, BA +2.70, WS +5.59, DP +8.34 (Table IV, units not stated)",
        where="§IV-B 'Architecture Stability' and Table IV, p. 251",
        quantity="concurrency.table4_greedy_minus_prob_min",
        subset="the same sampled graphs under both stagings at the first configured vertex count",
        low=0.0, high=None, tolerance=0.0,
        why_tolerance="a direction; the paper's units are not stated, so only the sign is comparable",
        primary=False, unit="k params"),
    Claim(
        key="concurrency.table4_greedy_stabler", paper=_PAPER,
        statement="Greedy staging creates more stable architectures (smaller spread of parameters) than "
                  "probabilistic staging, for every generator.",
        paper_value="sd greedy - sd probabilistic: ER -1.59, BA -3.50, WS -2.24, DP -0.80 (Table IV)",
        where="§IV-B 'Architecture Stability' and Table IV, p. 251",
        quantity="concurrency.table4_sd_greedy_minus_prob_max",
        subset="the same sampled graphs under both stagings at the first configured vertex count",
        low=None, high=0.0, tolerance=0.0, why_tolerance="a direction; units not stated in the paper",
        primary=False, unit="k params"),
    Claim(
        key="concurrency.table4_dp_smallest", paper=_PAPER,
        statement="DP creates the most efficient (smallest) architectures.",
        paper_value="DP 26.69 vs ER 46.03, BA 45.63, WS 36.44 (probabilistic staging, Table IV)",
        where="§IV-B 'Architecture Stability' and Table IV, p. 251",
        quantity="concurrency.table4_dp_minus_smallest_other",
        subset="probabilistic staging (the paper's setting for every other experiment), first configured vertex count",
        low=None, high=0.0, tolerance=0.0, why_tolerance="a direction; units not stated in the paper",
        primary=False, unit="k params"),
    Claim(
        key="concurrency.er_ba_communicate_more", paper=_PAPER,
        statement="ER and BA architectures suffer more from data communication than DP.",
        paper_value="ER/BA highest total communication (MB), DP lower (Fig. 7, read off the figure)",
        where="§IV-B and Fig. 7, p. 251",
        quantity="concurrency.lambda_er_ba_minus_dp_min",
        subset="best-CS partitions, every configured (vertices, n) (the paper: 40 vertices, n = 4-10)",
        low=0.0, high=None, tolerance=0.0, why_tolerance="a direction read off a figure",
        primary=False, unit="MB"),
    Claim(
        key="concurrency.cs_tracks_latency", paper=_PAPER,
        statement="The concurrency score relates closely to latency.",
        paper_value="'a close relationship between the reported score and actual latency' (no number)",
        where="§IV-B, p. 251; §IV intro ('a reasonable heuristic about the real performance')",
        quantity="concurrency.rho_cs_latency",
        subset="best partitions of every sampled graph; latency from the deterministic cost model, not devices",
        low=0.5, high=None, tolerance=0.0,
        why_tolerance="'close' read as a strong rank correlation (rho above 0.5, the conventional 'strong' bound); "
                      "the paper gives no number",
        primary=False, unit="rho"),
    Claim(
        key="concurrency.dp_er_more_parallel", paper=_PAPER,
        statement="DP and ER architectures are wider and shallower (more parallelism) than BA and WS.",
        paper_value="Fig. 10 (c) BA & WS 'longer execution time' vs (d) DP & ER 'more parallelism' (qualitative)",
        where="Fig. 10 and §IV-B 'Concurrency Study', p. 251",
        quantity="concurrency.chain_dp_er_minus_ba_ws",
        subset="sampled graphs at every configured vertex count; depth read as longest path / vertices",
        low=None, high=0.0, tolerance=0.0, why_tolerance="a direction read off a figure",
        primary=False, unit="fraction"),
    Claim(
        key="concurrency.dp_shallower_than_workload", paper=_PAPER,
        statement="Generated concurrent architectures have a lower maximum depth (longest path) for their size than "
                  "well-known architectures.",
        paper_value="Fig. 10 (a) ResNet-50 vs (d) DP: 'higher width/depth ... lower maximum depth' (qualitative)",
        where="§IV-B 'Concurrency Study' and Fig. 10, p. 251",
        quantity="concurrency.chain_dp_minus_workload",
        subset="DP graphs at every configured vertex count vs the most parallel of the workload's classifiers and "
               "concurrency.trace_archs (default ResNet-50, the paper's Fig. 10a), traced by torch.fx",
        low=None, high=0.0, tolerance=0.0, why_tolerance="a direction read off a figure",
        primary=False, unit="fraction"),
    Claim(
        key="concurrency.well_known_single_chain", paper=_PAPER,
        statement="Well-known architectures have a single-chain dependency: the longest path runs through (almost) "
                  "every layer.",
        paper_value="width 1 at almost every depth (ResNet-50, Fig. 10a; Fig. 1a)",
        where="§I p. 245; Fig. 1a and Fig. 10a",
        quantity="concurrency.workload_chain_fraction",
        subset="the workload's classifiers and concurrency.trace_archs (default ResNet-50, the paper's example) "
               "traced by torch.fx (operators as vertices); the least chain-like of them",
        low=1.0, high=1.0, tolerance=0.1,
        why_tolerance="short side branches (shortcuts, squeeze-excite) that Fig. 10a still draws as width 1 take "
                      "up to a tenth of the operators off the longest path",
        primary=False, unit="fraction"),
)
