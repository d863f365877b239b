"""Config group ``placement`` (conf/placement/default.yaml): MEEdge part 2 -- HPF branch placement,
the memory-elastic device-server loop (``placement.simulation``) and the paper's baselines
(``placement.baselines``).

The keys and types are those of the science dataclasses in :mod:`repshare.multiexit.placement_settings`
(``PlacementSettings``, ``SimulationSettings``) and ``BaselineSettings``: the schema is derived from them.
"""

from __future__ import annotations

from repshare.config.derive import schema_of
from repshare.config.limits import MAX_RESAMPLES, MAX_SEED
from repshare.config.multiexit import CONV_TYPES, KERNELS, MAX_FC_WIDTH
from repshare.config.rules import (Builds, Check, Each, Identifier, Interval, IntRange, Length, NonEmpty, OneOf,
                                   OrNull, Positive, Table, Unique)
from repshare.config.workload import names
from repshare.multiexit.baselines import BaselineSettings
from repshare.multiexit.placement import CANDIDATE_MODES, VARIANTS
from repshare.multiexit.placement_settings import PlacementSettings, SimulationSettings

PlacementSimConfig = schema_of(SimulationSettings, name="PlacementSimConfig")
# ``exits`` is not a config key: the stage takes it from part 1's profiles.
PlacementBaselinesConfig = schema_of(BaselineSettings, drop=["exits"], name="PlacementBaselinesConfig")
PlacementConfig = schema_of(PlacementSettings, name="PlacementConfig",
                            nested={"simulation": PlacementSimConfig, "baselines": PlacementBaselinesConfig})


def _classifier_in_workload(name, root) -> str | None:
    tasks = {str(m.name): str(m.task) for m in root.workload.models}
    if tasks.get(name) == "classification":
        return None
    classifiers = [n for n in names(root) if tasks[n] == "classification"]
    return f"must name a classification model of the workload ({', '.join(classifiers)})"


def _variant_swept(variant, root) -> str | None:
    swept = list(root.placement.variants)
    return None if variant in swept else f"must be one of placement.variants {swept}"


def _convs_match_type(n_conv, root) -> str | None:
    none = root.placement.baselines.branchynet_conv == "none"
    return None if (n_conv == 0) == none else "must be 0 exactly when placement.baselines.branchynet_conv is none"


FRACTION_OF_FULL = Interval(0, 1, open_low=True)  # of M_full, the unconstrained placement's bytes
BRANCH_CONVS = tuple(c for c in CONV_TYPES if c != "none")

RULES: Table = [
    ("placement.model_name", Identifier(), Check(_classifier_in_workload)),
    ("placement.candidates", OneOf(*CANDIDATE_MODES)),
    ("placement.bytes_per_param", OneOf(1, 2, 4, 8)),
    ("placement.max_per_exit", OrNull(IntRange(1, 1000))),
    ("placement.horizon_factor", Interval(1, 1000, open_low=True)),
    ("placement.horizon_factors", NonEmpty(), Unique(), Each(Interval(1, 1000, open_low=True))),
    ("placement.budget_fractions", NonEmpty(), Unique(), Each(FRACTION_OF_FULL)),
    ("placement.variants", NonEmpty(), Unique(), Each(OneOf(*VARIANTS))),
    ("placement.variant", OneOf(*VARIANTS), Check(_variant_swept)),
    ("placement.search_time_s", OrNull(Interval(0, 3600, open_low=True))),
    ("placement.node_budget", OrNull(IntRange(1, 100_000_000))),
    ("placement.mc_samples", IntRange(1, MAX_RESAMPLES)),
    ("placement.mc_seeds", NonEmpty(), Unique(), Each(IntRange(0, MAX_SEED))),
    ("placement.exact_max_candidates", IntRange(0, 1000)),
    ("placement.exact_node_limit", IntRange(1, 1_000_000_000)),
    ("placement.n_bootstrap", IntRange(0, MAX_RESAMPLES)),
    ("placement.simulation.rate_mbps", Interval(0, 1e6, open_low=True)),
    ("placement.simulation.request_bits", IntRange(0, 10**9)),
    ("placement.simulation.search_s", Interval(0, 3600)),
    ("placement.simulation.window_s", Interval(0, 86_400, open_low=True)),
    ("placement.simulation.trace_fractions", Length(2, 10_000), Each(FRACTION_OF_FULL)),
    ("placement.simulation.deadline_factor", Positive()),
    ("placement.baselines.seeds", NonEmpty(), Unique(), Each(IntRange(0, MAX_SEED))),
    ("placement.baselines.pool", IntRange(1, 64)),
    ("placement.baselines.spinn_fractions", NonEmpty(), Unique(), Each(Interval(0, 1, open_low=True, open_high=True))),
    ("placement.baselines.spinn_conv", OneOf(*BRANCH_CONVS)),
    ("placement.baselines.spinn_kernel", OneOf(*KERNELS)),
    ("placement.baselines.branchynet_exits", NonEmpty(), Unique(), Each(IntRange(1, 64))),
    ("placement.baselines.branchynet_conv", OneOf(*CONV_TYPES)),
    ("placement.baselines.branchynet_kernel", OneOf(*KERNELS)),
    ("placement.baselines.branchynet_n_conv", IntRange(0, 3), Check(_convs_match_type)),
    ("placement.baselines.branchynet_fc", Length(0, 2), Each(IntRange(1, MAX_FC_WIDTH))),
    # Backstop: whatever the placement stage would refuse (PlacementSettings.check) is refused here too.
    ("placement", Builds(PlacementSettings.from_mapping)),
]
