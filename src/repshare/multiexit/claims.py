"""MEEdge part 1's claims (branch zoo, neuron-level self-merge, few-shot KD), for the one verdict rule
(:mod:`repshare.claims`). Part 2 (placement) declares its own in ``placement_claims.py``.

``QUANTITIES``: every quantity the part-1 stages measure that a claim may name (key -> what it is).
Accuracy quantities are top-1 differences as fractions (0.01 = one point), measured on the val
(report) images with a paired bootstrap over images; decisions (survival, the merge rule's fraction,
twin pairs, structure choices) are made on the select images. ``CLAIMS``: the paper's claims.

The paper judges KD recovery against the original (unmerged, not retrained) branch. Retraining alone
can raise a branch's accuracy, so the primary KD claims compare with the control -- the same few-shot
KD applied to the unmerged branch -- and the paper's own comparison is kept as a non-primary claim.
"""

from __future__ import annotations

from repshare.claims import Claim

QUANTITIES: dict[str, str] = {
    "meedge.self_twin_saved_ratio": "parameters saved by self-merging both branches of same-shape pairs / by "
                                    "twin-merging each pair, both at the 1/3-1/2 rule's choice",
    "meedge.self_minus_twin_top1": "val top-1 of self-merged minus twin-merged branches (same pairs, the rule's choice)",
    "meedge.kd_few_pairs_minus_control_top1": "val top-1 after merging the fewest curve pairs + few-shot KD minus the "
                                              "same KD on the unmerged branch",
    "meedge.kd_few_pairs_minus_original_top1": "val top-1 after merging the fewest curve pairs + few-shot KD minus "
                                               "the trained (unmerged, not retrained) branch",
    "meedge.kd_many_pairs_minus_control_top1": "val top-1 after merging the most curve pairs + few-shot KD minus the "
                                               "same KD on the unmerged branch",
    "meedge.kd_many_pairs_minus_original_top1": "val top-1 after merging the most curve pairs + few-shot KD minus "
                                                "the trained branch",
    "meedge.kd_reach_fraction": "largest merged fraction of the candidate pairs whose recovered top-1 reaches the "
                                "trained branch's (mean over curve branches)",
    "meedge.rule_kd_minus_control_top1": "val top-1 of every merged survivor (rule + few-shot KD) minus the same KD "
                                         "without merging",
    "meedge.hetero_minus_homo_top1": "mean val top-1 over exits of per-exit best branch structures minus one "
                                     "structure at every exit",
}

_SEC_441 = "Sec. 4.4.1 and Fig. 7(2) (AlexNet on CIFAR-10, branches B1-B5)"
_SEC_442 = "Sec. 4.4.2 and Fig. 9(c) (three self-merged AlexNet branches, CIFAR-10, 20 % of the samples)"
_CURVE = "the curve branches (largest merged survivors), val images"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        key="meedge.self_merge_saves_twice", paper="meedge",
        statement="Compared with twin-merge, self-merge can reduce memory twice",
        paper_value="twice (2x)", where=_SEC_441, quantity="meedge.self_twin_saved_ratio",
        subset="same-shape branch pairs, each merged by the 1/3-1/2 rule (chosen on select images)",
        low=2.0, high=2.0, tolerance=0.5,
        why_tolerance="'twice' is a word read off one figure, not a measured ratio; +-0.5 separates 'about twice' "
                      "from 'the same' (1x) and from 'three times'",
        unit="x"),
    Claim(
        key="meedge.self_merge_more_accurate", paper="meedge",
        statement="Self-merge improves the accuracy of each branch compared to twin-merge",
        paper_value="higher accuracy for every branch", where=_SEC_441, quantity="meedge.self_minus_twin_top1",
        subset="same-shape branch pairs at the rule's choice, val images",
        low=0.0, high=None, tolerance=0.0,
        why_tolerance="a direction claim ('an improvement'): the interval must lie above zero"),
    Claim(
        key="meedge.kd_few_pairs_reach_unmerged", paper="meedge",
        statement="Few-shot KD after merging few neuron pairs reaches (exceeds) the accuracy without merging, "
                  "with the extra training not credited to the method",
        paper_value="accuracy exceeding the original", where=_SEC_442,
        quantity="meedge.kd_few_pairs_minus_control_top1", subset=_CURVE + "; the fewest merged pairs on the curve",
        low=0.0, high=None, tolerance=0.01,
        why_tolerance="'reaching' the unmerged accuracy within one point of top-1, the resolution at which the "
                      "paper's figure can be read"),
    Claim(
        key="meedge.kd_few_pairs_exceed_original", paper="meedge",
        statement="Few-shot KD after merging few neuron pairs exceeds the original accuracy (the paper's comparison: "
                  "the original branch got no extra training)",
        paper_value="accuracy exceeding the original", where=_SEC_442,
        quantity="meedge.kd_few_pairs_minus_original_top1", subset=_CURVE + "; the fewest merged pairs on the curve",
        low=0.0, high=None, tolerance=0.0,
        why_tolerance="a direction claim ('exceeding'); not primary because it credits the extra KD training to "
                      "merging (the control claim above is the fair one)",
        primary=False),
    Claim(
        key="meedge.kd_many_pairs_little_loss", paper="meedge",
        statement="Even with a large number of merged pairs, few-shot KD recovery loses little accuracy "
                  "(against the same KD without merging)",
        paper_value="little loss in accuracy", where=_SEC_442,
        quantity="meedge.kd_many_pairs_minus_control_top1", subset=_CURVE + "; the most merged pairs on the curve",
        low=0.0, high=None, tolerance=0.02,
        why_tolerance="the paper gives no number for 'little'; we read it as at most 2 points of top-1"),
    Claim(
        key="meedge.kd_many_pairs_little_loss_vs_original", paper="meedge",
        statement="Even with a large number of merged pairs, recovery loses little accuracy against the original "
                  "(the paper's comparison)",
        paper_value="little loss in accuracy", where=_SEC_442,
        quantity="meedge.kd_many_pairs_minus_original_top1", subset=_CURVE + "; the most merged pairs on the curve",
        low=0.0, high=None, tolerance=0.02,
        why_tolerance="'little' read as at most 2 points of top-1; not primary: credits the extra training",
        primary=False),
    Claim(
        key="meedge.kd_reach_window", paper="meedge",
        statement="The largest numbers of merged pairs whose recovery reaches the original accuracy lie between "
                  "1/3 and 1/2 of the pairs (the rule's window)",
        paper_value="between one-third and half of the merged pairs (red stars)", where=_SEC_442,
        quantity="meedge.kd_reach_fraction", subset=_CURVE, low=1 / 3, high=0.5, tolerance=1 / 12,
        why_tolerance="one step of the curve's grid of fractions (1/12 between 1/3 and 5/12): the figure's stars "
                      "sit on a grid too",
        primary=False),
    Claim(
        key="meedge.rule_almost_no_loss", paper="meedge",
        statement="Self-merge by the 1/3-1/2 rule with few-shot KD retraining keeps the branches' accuracy "
                  "('almost no loss of accuracy'), against the same KD without merging",
        paper_value="almost no loss of accuracy", where="Sec. 3.5.1 (self-merge; merging efficiency with retraining)",
        quantity="meedge.rule_kd_minus_control_top1", subset="every merged survivor, val images",
        low=0.0, high=None, tolerance=0.01,
        why_tolerance="'almost no loss' read as within one point of top-1"),
    Claim(
        key="meedge.heterogeneous_beats_homogeneous", paper="meedge",
        statement="Heterogeneous branches are more accurate than homogeneous ones",
        paper_value="heterogeneous branches significantly improve inference performance",
        where="Sec. 2.3 and Fig. 3 (VGG-16, SPINN placement; metric mAE)",
        quantity="meedge.hetero_minus_homo_top1",
        subset="every zoo branch: the best structure per exit vs the best single structure at all exits "
               "(chosen on select), mean val top-1 over exits",
        low=0.0, high=None, tolerance=0.0,
        why_tolerance="a direction claim; not primary because the paper's Fig. 3 measures mAE of placed "
                      "multi-exit models (part 2), this is its branch-level analogue",
        primary=False),
)
