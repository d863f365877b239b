"""Config group ``concurrency`` (conf/concurrency/default.yaml): the concurrency score (Hadidi et al.,
EDGE 2023) of generated and workload architectures.

The sub-groups ``generator``, ``network``, ``latency``, ``proxy`` and ``dp_sweep`` are the science
dataclasses of :mod:`repshare.concurrency` (``GeneratorParams``, ``NetSpec``, ``LinkModel``,
``ProxyTraining``, ``DPSweep``): their schemas are derived from them, minus the fields the stage sets
itself (``NetSpec.staging/num_classes/in_channels``, ``ProxyTraining.weight_decay``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from repshare.concurrency.graphs import GENERATORS, GeneratorParams
from repshare.concurrency.latency import LinkModel
from repshare.concurrency.settings import DPSweep, NetSpec, ProxyTraining
from repshare.config.derive import schema_of, science_from
from repshare.config.limits import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_STEPS
from repshare.config.rules import (Builds, Check, Each, Fraction, Interval, IntRange, Length, NonEmpty, OneOf,
                                   Positive, Table, Unique, When, sibling)

# 100 000 vertices ran out of memory after 30 s on the 24 GB machine; 2 000 already take minutes per
# graph to partition (the paper's largest graphs: 80 vertices).
MAX_VERTICES = 2000
MAX_PROXY_VERTICES = 200  # the proxy trains one network per architecture
MAX_IMAGE = 512  # network.image_size: the FLOP/byte weights of every vertex are traced at this size

ConcurrencyGeneratorConfig = schema_of(GeneratorParams, name="ConcurrencyGeneratorConfig")
ConcurrencyNetworkConfig = schema_of(NetSpec, drop=["staging", "num_classes", "in_channels"],
                                     name="ConcurrencyNetworkConfig")
ConcurrencyLatencyConfig = schema_of(LinkModel, name="ConcurrencyLatencyConfig")
ConcurrencyProxyConfig = schema_of(ProxyTraining, drop=["weight_decay"], name="ConcurrencyProxyConfig")
ConcurrencyDPSweepConfig = schema_of(DPSweep, name="ConcurrencyDPSweepConfig")


@dataclass
class ConcurrencyConfig:
    """Concurrency score (Hadidi et al., EDGE 2023): generated and workload architectures."""

    generators: list[str]
    n_vertices: list[int]
    n_units: list[int]
    epsilons: list[float]  # imbalance bounds handed to Mt-KaHyPar
    graphs_per_generator: int  # per vertex count; the paper samples 1000
    staging_samples: int  # Table IV: graphs per generator and staging (parameters only)
    grouping_units: list[int]
    exponents: list[float]  # a, b, c of Eq. 4
    seed: int
    score_workload: bool
    degree_matched: list[str]  # controls at DP's mean degree
    n_boot: int  # bootstrap resamples of the claims' intervals
    trace_archs: list[str]  # timm models traced and scored (Fig. 10a)
    trace_input_size: int
    generator: ConcurrencyGeneratorConfig
    network: ConcurrencyNetworkConfig
    latency: ConcurrencyLatencyConfig
    proxy: ConcurrencyProxyConfig
    dp_sweep: ConcurrencyDPSweepConfig


def _graph_sizes(root) -> list[int]:
    """Every vertex count a generator is sampled at (the proxy's too when it trains architectures)."""
    c = root.concurrency
    return list(c.n_vertices) + ([c.proxy.n_vertices] if c.proxy.archs_per_generator > 0 else [])


def _below_smallest_graph(what: str):
    def check(n, root) -> str | None:
        lo = min(root.concurrency.n_vertices)
        return None if n <= lo else f"must not exceed the smallest vertex count {lo} ({what})"
    return check


def _ba_m(m, root) -> str | None:
    lo = min(_graph_sizes(root))
    return None if m < lo else f"must be below every sampled vertex count (smallest: {lo})"


def _ws_k(k, root) -> str | None:
    lo = min(_graph_sizes(root))
    return None if k % 2 == 0 and k < lo else f"must be even and below every sampled vertex count (smallest: {lo})"


def _at_least_base(max_channels, root, key) -> str | None:
    base = sibling(root, key, "base_channels")
    return None if max_channels >= base else f"must be >= base_channels={base}"


def _within_image(resolution, root) -> str | None:
    size = root.concurrency.network.image_size
    return None if resolution <= size else f"must not exceed network.image_size={size}"


def _dp_sampled(controls, root) -> str | None:
    if not controls or "dp" in root.concurrency.generators:
        return None
    return "controls are matched to DP: add dp to concurrency.generators or set degree_matched=[]"


def _timm_name(arch, root) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_.-]+", str(arch)) else "must be a timm model name (letters, digits, _ . -)"


def _sweep_units(n, root) -> str | None:
    v = root.concurrency.dp_sweep.n_vertices
    return None if n <= v else f"must be in [2, dp_sweep.n_vertices={v}]"


def _sweeping(root) -> bool:
    return root.concurrency.dp_sweep.graphs > 0


RULES: Table = [
    ("concurrency.generators", NonEmpty(), Unique(), Each(OneOf(*GENERATORS))),
    ("concurrency.n_vertices", NonEmpty(), Unique(), Each(IntRange(2, MAX_VERTICES))),
    ("concurrency.n_units", NonEmpty(), Unique(), Each(IntRange(2, MAX_VERTICES)),
     Each(Check(_below_smallest_graph("units partition a graph")))),
    ("concurrency.epsilons", NonEmpty(), Unique(), Each(Interval(0, 1, open_low=True))),
    ("concurrency.graphs_per_generator", IntRange(2, 10_000)),
    ("concurrency.staging_samples", IntRange(2, 100_000)),
    ("concurrency.grouping_units", NonEmpty(), Unique(), Each(IntRange(1, MAX_VERTICES)),
     Each(Check(_below_smallest_graph("work units of a graph")))),
    ("concurrency.exponents", Length(3), Each(Interval(0, 100))),
    ("concurrency.seed", IntRange(0, MAX_SEED)),
    ("concurrency.degree_matched", Unique(), Each(OneOf(*(g for g in GENERATORS if g != "dp"))), Check(_dp_sampled)),
    ("concurrency.n_boot", IntRange(100, 100_000)),
    ("concurrency.trace_archs", Unique(), Each(Check(_timm_name))),
    ("concurrency.trace_input_size", IntRange(32, MAX_IMAGE)),
    ("concurrency.generator.er_p", Fraction()),
    ("concurrency.generator.ws_p", Fraction()),
    ("concurrency.generator.dp_p", Fraction()),
    ("concurrency.generator.dp_alpha", Interval(0, 100)),
    ("concurrency.generator.dp_beta", Interval(0, 100)),
    ("concurrency.generator.ba_m", IntRange(1, MAX_VERTICES), Check(_ba_m)),
    ("concurrency.generator.ws_k", IntRange(2, MAX_VERTICES), Check(_ws_k)),
    ("concurrency.network.base_channels", IntRange(1, 1024)),
    ("concurrency.network.max_channels", IntRange(1, 1024), Check(_at_least_base)),
    ("concurrency.network.image_size", IntRange(8, MAX_IMAGE)),
    ("concurrency.network.min_resolution", IntRange(1, MAX_IMAGE), Check(_within_image)),
    ("concurrency.network.stage_prob", Fraction()),
    ("concurrency.latency.unit_flops_per_s", Positive()),
    ("concurrency.latency.bandwidth_bytes_per_s", Positive()),
    ("concurrency.latency.message_latency_s", Interval(0, 3600)),
    ("concurrency.proxy.archs_per_generator", IntRange(0, 100)),
    ("concurrency.proxy.n_vertices", IntRange(4, MAX_PROXY_VERTICES)),
    ("concurrency.proxy.base_channels", IntRange(1, 1024)),
    ("concurrency.proxy.max_channels", IntRange(1, 1024), Check(_at_least_base)),
    ("concurrency.proxy.steps", IntRange(1, MAX_STEPS)),
    ("concurrency.proxy.batch_size", IntRange(1, MAX_BATCH)),
    ("concurrency.proxy.lr", Positive()),
    ("concurrency.proxy.n_train", IntRange(1, MAX_COUNT)),
    ("concurrency.proxy.n_eval", IntRange(1, MAX_COUNT)),
    ("concurrency.dp_sweep.betas", Unique(), Each(Interval(0, 100)), When(_sweeping, NonEmpty())),
    ("concurrency.dp_sweep.alphas", Unique(), Each(Interval(0, 100)), When(_sweeping, NonEmpty())),
    ("concurrency.dp_sweep.n_vertices", IntRange(2, MAX_VERTICES)),
    ("concurrency.dp_sweep.n_units", IntRange(2, MAX_VERTICES), Check(_sweep_units)),
    ("concurrency.dp_sweep.graphs", IntRange(0, 10_000)),
    # Backstops: the science dataclasses accept the values (their own checks).
    ("concurrency.generator", Builds(lambda v: science_from(GeneratorParams, v))),
    ("concurrency.network", Builds(lambda v: science_from(NetSpec, v))),
    ("concurrency.latency", Builds(lambda v: science_from(LinkModel, v))),
]
