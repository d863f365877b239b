"""Gemel (Padmanabhan et al., NSDI'23): merge identical layers across the models of one edge box.

``layers``: which conv/linear layers are identical across models, grouped heaviest first.
``merge``: tie them to one parameter tensor (storage identity) and list each parameter once.
``search``: the incremental heaviest-first search with the halving rule and a clean stop.
``retrain``: the Lightning joint retraining (loss weights as the reference), seeded per trial.
``outcomes`` / ``coco_map``: per-image results, so accuracy (top-1, COCO mAP) can be resampled.
``decision``: the accept/reject rule (one-sided bound of the margin on the select split).
``study``: the search, the no-merging control, the report outcomes, the simulation, the estimates.
``measures``: report-split estimates, the chance guard, query accuracy.
``timing``: the cost model (and measured times) behind the simulation; tensor maps.
``simulate``: the edge box's GPU time-sharing, frames processed under a memory budget.
``claims`` / ``section`` / ``figures`` / ``files``: the paper's claims, the dashboard section, figures, outputs.
``store``: the merged workload as safetensors (each shared tensor once) + manifest, and back.
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
