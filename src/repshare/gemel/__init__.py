"""Gemel (Padmanabhan et al., NSDI'23): merge identical layers across the models of one edge box.

``layers``: which conv/linear layers are identical across models, grouped heaviest first.
``merge``: tie them to one parameter tensor (storage identity) and list each parameter once.
``search``: the incremental heaviest-first search with the halving rule and a clean stop.
``retrain``: the Lightning joint-retraining module (loss weights as the reference).
``store``: the merged workload as safetensors (each shared tensor once) + manifest, and back.
``simulate``: the edge box's GPU time-sharing, frames processed under a memory budget.
"""

from repshare.gemel.layers import Group, LayerInstance, group_layers, identical_layers, layer_signature
from repshare.gemel.merge import shared_bytes, tie_layers, unique_parameters
from repshare.gemel.search import Iteration, search
from repshare.gemel.simulate import SimModel, SimResult, simulate

__all__ = [
    "Group", "LayerInstance", "group_layers", "identical_layers", "layer_signature",
    "shared_bytes", "tie_layers", "unique_parameters", "Iteration", "search",
    "SimModel", "SimResult", "simulate",
]
