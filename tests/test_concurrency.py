"""Concurrency score (issue 16): metrics against hand-computed values and the paper's Fig. 5,
Mt-KaHyPar partitions, generators, DAG conversion, the network and its FLOPs, determinism."""

from __future__ import annotations


import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from repshare.concurrency.graphs import (FIG5_EXAMPLES, GENERATORS, INPUT, OUTPUT, GeneratorParams, dp_graph,
                                         parallel_chains, random_dag, ring_distance, source_and_sink, to_dag,
                                         undirected_graph, width_depth)
from repshare.concurrency.grouping import assign_workload, balance_quality, grouping, normalised_entropy
from repshare.concurrency.hypergraph import build_hypergraph, partition, partition_km1
from repshare.concurrency.latency import LinkModel, serial_latency, simulate_latency
from repshare.concurrency.metrics import (communication, concurrency_score, load_balance, normalised_communication,
                                          overlap, score_partitions, unit_cost)
from repshare.concurrency.network import DagNetwork, NetSpec, annotate, total_flops
from repshare.concurrency.trace import operator_dag


def weighted(dag: nx.DiGraph, flops: float = 10, nbytes: float = 100) -> nx.DiGraph:
    for v in dag:
        dag.nodes[v].update(flops=flops, bytes=nbytes)
    return dag


# --------------------------------------------------------------------------- eta (Fig. 5)
def test_fig5_eta_chain_and_parallel_chains():
    assert overlap(parallel_chains([7]), 3) == pytest.approx(3.0)  # a chain of 7: 7 / (7/3)
    assert overlap(parallel_chains([5, 5, 5]), 3) == pytest.approx(1.0)  # three chains of 5: 5 / (15/3)


@pytest.mark.parametrize("name,lengths,paper_eta", FIG5_EXAMPLES)
def test_fig5_all_four_examples(name, lengths, paper_eta):
    assert overlap(parallel_chains(lengths), 3) == pytest.approx(paper_eta)


# --------------------------------------------------------------------------- partition and km1
def two_components() -> nx.DiGraph:
    dag = nx.DiGraph()
    nx.add_path(dag, ["a1", "a2", "a3"])
    nx.add_path(dag, ["b1", "b2", "b3"])
    return weighted(dag)


def test_forced_partition_is_balanced_and_communication_free():
    dag = two_components()
    parts = partition(build_hypergraph(dag), 2, 0.03, seed=0)
    assert {parts["a1"], parts["a2"], parts["a3"]} != {parts["b1"], parts["b2"], parts["b3"]}
    assert load_balance(dag, parts, 2) == pytest.approx(1.0)
    assert communication(dag, parts) == 0.0


def test_km1_on_a_hand_made_hypergraph():
    dag = nx.DiGraph([(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)])
    for v, b in {0: 5, 1: 7, 2: 11, 3: 13}.items():
        dag.nodes[v].update(bytes=b, flops=1)
    parts = {0: 0, 1: 0, 2: 1, 3: 2}
    # net of 0 = {0,1,2,3} spans 3 units: 5*2; net of 1 = {1,2}: 7*1; net of 2 = {2,3}: 11*1; 3 has no consumers
    assert communication(dag, parts) == 5 * 2 + 7 + 11
    assert communication(dag, {v: 0 for v in dag}) == 0


def test_our_km1_equals_the_partitioners_own():
    dag = annotate(random_dag("er", 20, 3), NetSpec(), 3)
    hg = build_hypergraph(dag)
    parts = partition(hg, 4, 0.1, seed=0)
    assert communication(dag, parts) == partition_km1(hg, 4, 0.1, seed=0)
    assert load_balance(dag, parts, 4) <= 1.1 + 1e-9 + max(dag.nodes[v]["flops"] for v in dag) / (
        sum(dag.nodes[v]["flops"] for v in dag) / 4)


def test_load_balance_and_score_closed_form():
    dag = nx.DiGraph([(0, 1), (1, 2)])
    for v, w in {0: 1, 1: 1, 2: 2}.items():
        dag.nodes[v].update(flops=w, bytes=1)
    assert load_balance(dag, {0: 0, 1: 0, 2: 1}, 2) == pytest.approx(1.0)
    assert load_balance(dag, {0: 0, 1: 0, 2: 0}, 2) == pytest.approx(2.0)
    assert normalised_communication(12.0, 3.0, 2) == pytest.approx(2.0)
    assert concurrency_score(2.0, 4.0, 1.0) == pytest.approx((2 * 4 ** 1.5) ** (1 / 3))
    assert concurrency_score(2.0, 4.0, 1.0, (1, 1, 1)) == pytest.approx(2.0)
    assert concurrency_score(1.0, 0.0, 3.0) == 0.0


def test_score_partitions_rows_per_epsilon():
    dag = annotate(random_dag("dp", 24, 1), NetSpec(), 1)
    rows = score_partitions(dag, 4, [0.03, 0.3], seed=0)
    assert [r["epsilon"] for r in rows] == [0.03, 0.3]
    for r in rows:
        assert r["Lambda_norm"] == pytest.approx(r["Lambda"] / (unit_cost(dag) * 4))
        assert r["CS"] == pytest.approx(concurrency_score(r["delta_w"], r["Lambda_norm"], r["eta"]))
        assert r["delta_w"] >= 1.0


# --------------------------------------------------------------------------- generators and DAGs
def test_dp_at_beta_zero_is_an_independent_edge_probability():
    # Eq. 1 as printed, P_new = alpha * P^(beta d): at beta = 0 every pair has probability alpha,
    # whatever its distance; alpha = P gives ER(P), alpha = 1 the complete graph.
    n, p, reps = 30, 0.3, 200
    counts = np.zeros(n // 2 + 1)
    pairs = np.zeros(n // 2 + 1)
    for s in range(reps):
        g = dp_graph(n, alpha=p, beta=0.0, p=p, seed=s)
        for i in range(n):
            for j in range(i + 1, n):
                d = ring_distance(i, j, n)
                pairs[d] += 1
                counts[d] += g.has_edge(i, j)
    freq = counts[1:] / pairs[1:]
    sd = np.sqrt(p * (1 - p) / pairs[1:])
    assert np.all(np.abs(freq - p) < 5 * sd)  # every distance: the same probability p
    assert dp_graph(12, alpha=1.0, beta=0.0, p=0.3, seed=0).number_of_edges() == 12 * 11 // 2


def test_dp_probability_falls_with_distance():
    n = 40
    near = far = 0
    for s in range(50):
        g = dp_graph(n, alpha=1.0, beta=1.0, p=0.5, seed=s)
        near += sum(g.has_edge(i, (i + 1) % n) for i in range(n))
        far += sum(g.has_edge(i, (i + 10) % n) for i in range(n))
    assert near > 10 * max(far, 1)


def test_ring_distance():
    assert ring_distance(0, 1, 10) == 1 and ring_distance(0, 9, 10) == 1 and ring_distance(2, 7, 10) == 5


@pytest.mark.parametrize("generator", GENERATORS)
def test_dag_conversion_properties(generator):
    for seed in range(4):
        ug = undirected_graph(generator, 30, seed)
        dag = to_dag(ug)
        assert nx.is_directed_acyclic_graph(dag)
        assert source_and_sink(dag) == (INPUT, OUTPUT)
        inner = dag.subgraph(v for v in dag if v not in (INPUT, OUTPUT))
        assert {frozenset((u - 1, v - 1)) for u, v in inner.edges} == {frozenset(e) for e in ug.edges}
        assert all(dag.has_edge(INPUT, v) for v in inner if inner.in_degree(v) == 0)
        assert all(dag.has_edge(v, OUTPUT) for v in inner if inner.out_degree(v) == 0)


def test_dfs_orientation_visits_smaller_ids_first():
    ug = nx.Graph([(0, 2), (2, 1), (0, 1)])  # DFS from 0: 0, 1, 2 (1 before 2)
    dag = to_dag(ug)
    assert set(dag.edges) >= {(1, 2), (1, 3), (2, 3)}
    assert set(dag.successors(INPUT)) == {1} and set(dag.predecessors(OUTPUT)) == {3}


def test_width_depth_of_parallel_chains():
    assert width_depth(parallel_chains([3, 3])) == {1: 2, 2: 2, 3: 2}


# --------------------------------------------------------------------------- network
def test_network_forward_backward_and_flops_equal_vertex_weights():
    dag = random_dag("ws", 16, 0)
    spec = NetSpec(base_channels=8, max_channels=32, num_classes=5)
    net = DagNetwork(dag, spec, seed=0)
    x = torch.randn(3, 3, 32, 32)
    out = net(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    weighted_dag = annotate(dag, spec, seed=0)
    assert sum(weighted_dag.nodes[v]["flops"] for v in weighted_dag) == total_flops(net)
    outs = net.eval().forward_all(torch.zeros(1, 3, 32, 32))
    assert all(weighted_dag.nodes[v]["bytes"] == outs[v].numel() * 4 for v in weighted_dag)
    assert sum(weighted_dag.nodes[v]["params"] for v in weighted_dag) == sum(p.numel() for p in net.parameters())


def test_greedy_staging_stages_whenever_allowed():
    dag = parallel_chains([6])
    shapes = DagNetwork(dag, NetSpec(base_channels=8, max_channels=32, staging="greedy")).shapes
    assert [shapes[v]["channels"] for v in range(1, 7)] == [16, 32, 32, 32, 32, 32]
    assert [shapes[v]["resolution"] for v in range(1, 7)] == [16, 8, 8, 8, 8, 8]


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_graphs_and_partitions():
    for g in GENERATORS:
        a, b = random_dag(g, 30, 7), random_dag(g, 30, 7)
        assert sorted(a.edges) == sorted(b.edges)
        assert sorted(random_dag(g, 30, 8).edges) != sorted(a.edges)
    dag = annotate(random_dag("dp", 40, 7), NetSpec(), 7)
    hg = build_hypergraph(dag)
    assert partition(hg, 6, 0.1, seed=0) == partition(hg, 6, 0.1, seed=0)
    assert annotate(random_dag("dp", 40, 7), NetSpec(), 7).nodes(data=True) == dag.nodes(data=True)


# --------------------------------------------------------------------------- latency and grouping
def test_simulated_latency_by_hand():
    dag = nx.DiGraph([("in", "a"), ("in", "b"), ("a", "out"), ("b", "out")])
    link = LinkModel(unit_flops_per_s=1.0, bandwidth_bytes_per_s=1.0, message_latency_s=0.0)
    for v, (f, b) in {"in": (1, 1), "a": (1, 1), "b": (1, 1), "out": (0, 0)}.items():
        dag.nodes[v].update(flops=f, bytes=b)
    lat = simulate_latency(dag, {"in": 0, "a": 0, "b": 1, "out": 0}, link)
    # in 0-1 on unit 0; a 1-2 on unit 0; b waits for in's bytes (arrive 2), runs 2-3; its output arrives 4
    assert lat["latency_s"] == pytest.approx(4.0) and lat["comm_s"] == pytest.approx(2.0)
    assert simulate_latency(dag, {v: 0 for v in dag}, link)["latency_s"] == pytest.approx(3.0)
    assert serial_latency(dag, link) == pytest.approx(3.0)


def test_grouping_and_assign_workload():
    dag = parallel_chains([3, 3, 2])
    groups = grouping(dag)
    assert sorted(map(sorted, groups.values())) == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assignment = assign_workload(groups, 3)  # two work units + the gather unit
    assert sorted(len(a) for a in assignment[:-1]) == [3, 5] and assignment[-1] == ["output"]
    assert normalised_entropy([2, 2, 2]) == pytest.approx(1.0)
    assert normalised_entropy([1, 0]) == pytest.approx(0.0)
    assert balance_quality(parallel_chains([2, 2]), 2) == pytest.approx(1.0)


# --------------------------------------------------------------------------- tracing
def test_operator_dag_of_a_small_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.zeros(1, 3, 8, 8)
    dag = operator_dag(model, x)
    src, snk = source_and_sink(dag)
    assert dag.number_of_nodes() == 5 and nx.dag_longest_path_length(dag) == 4
    with FlopCounterMode(display=False) as fc:
        model(x)
    assert sum(dag.nodes[v]["flops"] for v in dag) == fc.get_total_flops()
    assert dag.nodes[src]["bytes"] == 3 * 8 * 8 * 4
    assert overlap(dag, 3) == pytest.approx(3.0)  # a chain: eta = n


def test_a_model_with_tf_same_padding_traces_with_timm_leaves_and_keeps_every_flop():
    """tf_efficientnet_b0 (the real workload's classifier) pads from the input's shape, which plain
    symbolic_trace refuses; the timm-leaf fallback keeps each such conv whole. The operators' FLOPs add
    up to the whole model's (torch's counter on the plain forward) and the DAG is one input to one output."""
    import timm

    model = timm.create_model("tf_efficientnet_b0", num_classes=10).eval()
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    dag = operator_dag(model, x)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    assert sum(dag.nodes[v]["flops"] for v in dag) == fc.get_total_flops()
    src, snk = source_and_sink(dag)
    assert nx.is_directed_acyclic_graph(dag) and nx.has_path(dag, src, snk)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,match", [
    (lambda: random_dag("xyz", 10, 0), "xyz"),
    (lambda: random_dag("er", 1, 0), "1"),
    (lambda: GeneratorParams(er_p=1.5), "1.5"),
    (lambda: GeneratorParams(dp_p=-0.1), "-0.1"),
    (lambda: partition(build_hypergraph(two_components()), 1, 0.1), "n=1"),
    (lambda: partition(build_hypergraph(two_components()), 7, 0.1), "n=7"),
    (lambda: partition(build_hypergraph(two_components()), 2, 0.0), "epsilon=0.0"),
    (lambda: partition(build_hypergraph(two_components()), 2, -1.0), "epsilon=-1.0"),
    (lambda: overlap(parallel_chains([3]), 1), "n=1"),
    (lambda: NetSpec(staging="random"), "random"),
])
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture(scope="module")
def raw_cfg():
    from repshare.config import compose_raw

    return compose_raw([])


@pytest.mark.parametrize("key,value", [
    ("concurrency.generators", ["er", "xyz"]),
    ("concurrency.n_vertices", [1]),
    ("concurrency.n_units", [1, 4]),
    ("concurrency.n_units", [4, 100]),
    ("concurrency.epsilons", [0.1, 0.0]),
    ("concurrency.generator.er_p", 1.2),
    ("concurrency.generator.dp_p", -0.5),
    ("concurrency.generator.ws_p", 2.0),
    # issue 24/29: empty, duplicate and oversized values, one line naming the key
    ("concurrency.grouping_units", []),
    ("concurrency.grouping_units", [100]),
    ("concurrency.generators", ["er", "er"]),
    ("concurrency.network.image_size", 1),
    ("concurrency.dp_sweep.betas", []),
    ("concurrency.seed", -1),
    ("concurrency.n_vertices", [100000]),
    ("concurrency.degree_matched", ["dp"]),
    ("concurrency.degree_matched", ["er", "er"]),
    ("concurrency.n_boot", 5),
])
def test_bad_config_fails_at_start_up(raw_cfg, key, value):
    from omegaconf import OmegaConf

    from repshare.config import ConfigError, validate_config

    cfg = OmegaConf.create(OmegaConf.to_container(raw_cfg))
    OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_huge_weights_are_scaled_to_fit_the_partitioner():
    from repshare.concurrency.hypergraph import MAX_TOTAL

    dag = weighted(two_components(), flops=4e9, nbytes=3e9)  # totals far beyond int32, as ResNet-50's FLOPs
    hg = build_hypergraph(dag)
    assert sum(hg.weights) <= MAX_TOTAL and len(set(hg.weights)) == 1  # proportional: equal stays equal
    parts = partition(hg, 2, 0.03, seed=0)
    assert load_balance(dag, parts, 2) == pytest.approx(1.0) and communication(dag, parts) == 0.0
    small = weighted(two_components(), flops=7, nbytes=5)
    assert build_hypergraph(small).weights == [7] * 6  # small totals are kept exactly
