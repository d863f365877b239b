"""Cao et al. (MobiCom'24), "Representation similarity guided sharing": the claims this topic tests.

Every quantity is measured on the paper's setting -- the ``resample`` adapter (channels sampled
with repetition, then resized: the paper's Sec. 2 "Representation Shape Consistency"), each model at
its own input (``per_model``), the 8 x 8 stage pairs of our EfficientDet-D0 backbone and
EfficientNet-B0 classifier -- on the report split (``val``): CKA S (the paper's Eq. 1 by default)
and top-1 of every merge on the same first ``sharing.n_eval`` images. Correlation intervals are
percentile bootstraps over pairs and report images together (a merge's accuracy is a mean over
images); "CKA beats X" is the paired bootstrap difference |r_S| - |r_X| on the same resampled pairs
and images. Quotes are from /work/shared/papers/cao2024_representation_similarity_cka_sharing.txt.

Primary: the two correlations (the abstract's and conclusion's "|r| >= 0.94" rests on them) and
"CKA predicts merged accuracy better than #Params, Size and FLOPs" (the abstract: "... than other
metrics"). S' is an observation of the paper ("An interesting observation is ..."): not primary.
"""

from __future__ import annotations

from repshare.claims import Claim

PAPER = "cka"
REFERENCE = ("per_model", "resample")  # the paper's setting: (input protocol, adapter)
SETTING = "resample adapter, per-model input, report split (val)"

QUANTITIES: dict[str, str] = {
    "cka.abs_r_same": "|Pearson r| between merged top-1 and CKA S over the same-stage pairs (i = j)",
    "cka.abs_r_cross": "|Pearson r| between merged top-1 and CKA S over the cross-stage pairs (i != j)",
    "cka.abs_r_all": "|Pearson r| between merged top-1 and CKA S over every pair",
    "cka.abs_r_params_same": "|Pearson r| between merged top-1 and #Params off-loaded, same-stage pairs (control)",
    "cka.abs_r_size_same": "|Pearson r| between merged top-1 and the shared representation's size, same-stage pairs "
                           "(control)",
    "cka.abs_r_flops_same": "|Pearson r| between merged top-1 and FLOPs off-loaded, same-stage pairs (control)",
    "cka.gap_params_same": "|r(acc, S)| - |r(acc, #Params)| on the same resampled same-stage pairs and images",
    "cka.gap_size_same": "|r(acc, S)| - |r(acc, Size)| on the same resampled same-stage pairs and images",
    "cka.gap_flops_same": "|r(acc, S)| - |r(acc, FLOPs)| on the same resampled same-stage pairs and images",
    "cka.s_prime": "S' of a hinge fit acc = a + b max(0, S - S') (flat below S', linear above) to the same-stage "
                   "pairs: the breakpoint",
    "cka.acc_below_s_prime": "the hinge fit's accuracy below S' (its flat part a), same-stage pairs",
}

# |r| = 0.94 from 8 same-stage pairs is itself uncertain: at n = 8 a Fisher-z 95 % interval around 0.94 is
# about [0.70, 0.99], so 0.1 is a conservative half of that spread, and |r| >= 0.84 still reads as "highly
# correlated" in the paper's words.
_R_TOL = 0.1
_R_WHY = ("the paper's |r| comes from one run on 8 (same-stage) or 56 (cross-stage) pairs; at n = 8 its own "
          "Fisher-z 95 % interval around 0.94 is about [0.70, 0.99]: 0.1 keeps the claim at 'highly correlated' "
          "(|r| >= 0.84) without demanding more precision than the paper has")
_DIR_WHY = "a direction (CKA's |r| larger than the other metric's): the interval of the difference must exclude 0"

CLAIMS: tuple[Claim, ...] = (
    Claim("cka.same_stage_r", PAPER,
          "Same-stage sharing: merged accuracy is highly correlated with representation similarity S",
          "|r| = 0.94", "Sec. 3 'Same-Stage Layer Sharing'; Fig. 3; Fig. 4(a); abstract and Sec. 4 '|r| >= 0.94'",
          "cka.abs_r_same", f"the 8 same-stage pairs (i = j); {SETTING}", 0.94, 0.94, _R_TOL, _R_WHY),
    Claim("cka.cross_stage_r", PAPER,
          "Cross-stage sharing: merged accuracy is strongly correlated with S across stages",
          "|r| = 0.99", "Sec. 3 'Cross-Stage Layer Sharing'; Fig. 4(b)",
          "cka.abs_r_cross", f"the 56 cross-stage pairs (i != j); {SETTING}", 0.99, 0.99, _R_TOL, _R_WHY),
    Claim("cka.beats_params", PAPER, "S predicts merged accuracy better than #Params",
          "|r| = 0.94 vs 0.89", "Sec. 3 'Same-Stage Layer Sharing' (Fig. 3); abstract '... than other metrics'",
          "cka.gap_params_same", f"the 8 same-stage pairs; {SETTING}", 0.0, None, 0.0, _DIR_WHY),
    Claim("cka.beats_size", PAPER, "S predicts merged accuracy better than the representation size",
          "|r| = 0.94 vs 0.33", "Sec. 3 'Same-Stage Layer Sharing' (Fig. 3); abstract '... than other metrics'",
          "cka.gap_size_same", f"the 8 same-stage pairs; {SETTING}", 0.0, None, 0.0, _DIR_WHY),
    Claim("cka.beats_flops", PAPER, "S predicts merged accuracy better than FLOPs",
          "|r| = 0.94 vs 0.0021", "Sec. 3 'Same-Stage Layer Sharing' (Fig. 3); abstract '... than other metrics'",
          "cka.gap_flops_same", f"the 8 same-stage pairs; {SETTING}", 0.0, None, 0.0, _DIR_WHY),
    Claim("cka.threshold", PAPER,
          "There is a threshold S' = 0.4: accuracy is extremely low below it and almost linear in S above it",
          "S' = 0.4", "Sec. 3 'Same-Stage Layer Sharing' ('An interesting observation ...')",
          "cka.s_prime", f"the 8 same-stage pairs; {SETTING}; S' = breakpoint of a least-squares hinge fit", 0.4, 0.4,
          0.1, "the paper reads S' off a scatter of 8 points and prints it to one decimal: one printed step either way",
          primary=False),
)
