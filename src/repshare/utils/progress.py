"""Progress of a long loop: a tqdm bar on a terminal, otherwise a log line every ~10 % with an ETA.

A stage whose output goes to a file (``dvc repro > log``, a cluster job) still says how far it is.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("repshare")


def progress(items: Iterable[T], total: int | None, desc: str, every: float = 0.1) -> Iterator[T]:
    """Yield ``items``; show how far the loop is (bar on a terminal, log lines with an ETA otherwise)."""
    if sys.stderr.isatty() or not total:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False, disable=None)
        return
    start, step, next_at = time.perf_counter(), max(1, round(total * every)), 0
    for k, item in enumerate(items):
        yield item
        done = k + 1
        if done >= next_at + step or done == total:
            next_at = done
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (total - done)
            log.info("%s: %d/%d (%.0f %%), %.0f s elapsed, ETA %.0f s", desc, done, total, 100 * done / total, elapsed, eta)
