"""MEEdge: memory-elastic multi-exit networks (branch zoo, survival, merging, placement, simulation)."""
