"""Operator DAGs of real models by torch.fx: trace, run once, weigh every operator.

``symbolic_trace`` gives the operator graph (placeholder -> modules/functions -> output); an fx
Interpreter runs it on one image and records, per operator, the FLOPs torch's counter sees
(``flops``) and the bytes of the tensors it returns (``bytes``). Parameter reads (``get_attr``)
and operators that return no tensor (shape reads, asserts; their inputs are bridged to their
consumers) are dropped: weights live on the unit that uses them, they are not communicated. Like a generated
DAG, any other vertex without predecessors is fed by the input and any vertex without successors
feeds the output, so every metric of :mod:`metrics` applies unchanged.
"""

from __future__ import annotations

import networkx as nx
import torch
import torch.fx as fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _tensor_bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


class _Weigh(fx.Interpreter):
    """Runs the graph and records FLOPs and output bytes of every node."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.flops: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def run_node(self, n: fx.Node):
        with FlopCounterMode(display=False) as counter:
            out = super().run_node(n)
        self.flops[n.name] = int(counter.get_total_flops())
        self.bytes[n.name] = _tensor_bytes(out)
        return out


class _TimmLeafTracer(fx.Tracer):
    """fx tracing with timm's own untraceable modules and functions kept whole (as timm's feature
    extraction does): e.g. ``Conv2dSame``, whose padding depends on the input's shape, is one operator."""

    def __init__(self):
        from timm.layers import _fx

        super().__init__(autowrap_functions=tuple(_fx.get_notrace_functions()))
        self.leaves = tuple(_fx.get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, qualname)


def _timm_leaf_trace(model: nn.Module) -> fx.GraphModule:
    """The fallback when plain ``symbolic_trace`` fails (models that trace plainly keep their graphs)."""
    try:
        return fx.GraphModule(model, _TimmLeafTracer().trace(model))
    except Exception as err:  # fx raises many types; say which model and why
        raise RuntimeError(f"torch.fx cannot trace {type(model).__name__}: {err}") from None


@torch.no_grad()
def operator_dag(model: nn.Module, example: torch.Tensor) -> nx.DiGraph:
    """The operator DAG of ``model`` on ``example`` (one image), vertices weighted by FLOPs and
    output bytes, with attributes ``op`` (fx opcode) and ``target``."""
    model = model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - e.g. TF "same" padding computed from the input's shape
        gm = _timm_leaf_trace(model)
    weigh = _Weigh(gm)
    weigh.run(example)
    dag = nx.DiGraph()
    inputs, outputs = [], []
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            continue
        dag.add_node(n.name, op=n.op, target=str(n.target), flops=weigh.flops[n.name],
                     bytes=weigh.bytes[n.name])
        if n.op == "placeholder":
            inputs.append(n.name)
        if n.op == "output":
            outputs.append(n.name)
        for u in n.all_input_nodes:
            if u.op != "get_attr":
                dag.add_edge(u.name, n.name)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{type(model).__name__}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    src, snk = inputs[0], outputs[0]
    # Operators that return no tensor (shape reads, asserts) carry no data: bridge them out so
    # their inputs still order their consumers.
    for v in [v for v in dag.nodes if dag.nodes[v]["bytes"] == 0 and v not in (src, snk)]:
        dag.add_edges_from((u, w) for u in dag.predecessors(v) for w in dag.successors(v))
        dag.remove_node(v)
    for v in list(dag.nodes):
        if v != src and dag.in_degree(v) == 0:
            dag.add_edge(src, v)
        if v != snk and dag.out_degree(v) == 0:
            dag.add_edge(v, snk)
    return dag
