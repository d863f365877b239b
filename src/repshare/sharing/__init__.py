"""Representation sharing: adapters (fixed and fitted), the merged classifier, memory/FLOP accounting,
evaluation, the sharing-point search."""

from repshare.sharing.adapter import (
    ADAPTERS,
    LABEL_FREE,
    RESIZE_METHODS,
    Adapter,
    ConvAdapter,
    MomentsAdapter,
    adapter_bytes,
    adapter_flops,
    channel_index,
    resize,
)
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
    "ADAPTERS", "LABEL_FREE", "RESIZE_METHODS", "Adapter", "ConvAdapter", "MomentsAdapter", "adapter_bytes",
    "adapter_flops", "channel_index", "resize",
    "memory_saved_frac", "model_bytes", "model_params", "offloaded_bytes", "offloaded_params",
    "LayeredNet", "MergedClassifier", "SkipAlignedMerge", "align_inputs", "crossing_positions", "stage_shapes",
]
