"""Representation sharing: adapters, the merged classifier, memory/FLOP accounting, evaluation."""

from repshare.sharing.adapter import RESIZE_METHODS, Adapter, channel_index, resize
from repshare.sharing.memory import (
    memory_saved_frac,
    model_bytes,
    model_params,
    offloaded_bytes,
    offloaded_params,
)
from repshare.sharing.merged import (
    LayeredNet,
    MergedClassifier,
    SkipAlignedMerge,
    align_inputs,
    crossing_positions,
    stage_shapes,
)

__all__ = [
    "RESIZE_METHODS", "Adapter", "channel_index", "resize",
    "memory_saved_frac", "model_bytes", "model_params", "offloaded_bytes", "offloaded_params",
    "LayeredNet", "MergedClassifier", "SkipAlignedMerge", "align_inputs", "crossing_positions", "stage_shapes",
]
