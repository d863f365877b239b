"""Bounds on sizes, shared by the group schemas: a value beyond them cannot run on the machines this
pipeline targets (24 GB of memory, 2 CPU cores, a 64 GB disk; one GPU for the gpu/real presets) and
stops at compose with one line instead of running out of memory or disk after minutes.

They are generous on purpose: each is far beyond every preset (the largest preset value is given),
so they never bind a legitimate run; raise one here, with the reason, if a bigger machine needs it.
"""

from __future__ import annotations

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
MAX_IMAGE_SIZE = 1536  # side of any image or model input, px (EfficientDet-D7's; presets: 512)
MAX_COUNT = 10_000_000  # images, samples or rows a key counts (ImageNet's train split: 1.28 M)
MAX_BATCH = 4096  # images per batch (presets: 500)
MAX_EPOCHS = 1000  # training epochs (presets: 30)
MAX_STEPS = 1_000_000  # optimiser steps (presets: 40)
MAX_RESAMPLES = 100_000  # bootstrap resamples, Monte-Carlo draws, timing repeats (presets: 2000)
MAX_WORKERS = 64  # data-loader processes (presets: 8)
